//! `doctor` against recorded machine states: a healthy NixOS H100 host (the spec and
//! GPU recorded in fixtures/h100) and each broken state the write-up's Troubleshooting
//! section covers. No systemd, Docker or GPU is needed: [`FakeHost`] answers every probe
//! from fixtures.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use cdi_harness::doctor::{self, DoctorReport, StepStatus};
use cdi_harness::engine::EngineInfo;
use cdi_harness::gpu::{GpuError, Inventory, parse_smi_list_with_mig};
use cdi_harness::host::{FileInfo, HostError, HostSource, UserInfo};

fn fixture(rel: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

const BOOT: u64 = 1_795_000_000;
const SPEC: &str = "/run/cdi/nvidia-container-toolkit.json";
const ROOTFUL: &str = "/run/docker.sock";
const DOCKER_GID: u32 = 131;

/// What `--fix` turns the fake machine into.
type AfterFix = Box<dyn Fn(&mut FakeHostState)>;

/// A machine made of recordings.
struct FakeHost {
    shows: BTreeMap<String, Result<String, HostError>>,
    journal: String,
    files: BTreeMap<PathBuf, (FileInfo, String)>,
    dirs: BTreeMap<PathBuf, FileInfo>,
    user: UserInfo,
    env: BTreeMap<String, String>,
    engine: Result<EngineInfo, String>,
    gpus: Result<Inventory, GpuError>,
    fixes: RefCell<Vec<String>>,
    /// What `--fix` turns the machine into (applied on the first fix).
    after_fix: Option<AfterFix>,
    state: RefCell<FakeHostState>,
}

#[derive(Default, Clone)]
struct FakeHostState {
    spec_present: Option<bool>,
    generator: Option<String>,
}

fn info(
    path: &str,
    is_dir: bool,
    is_socket: bool,
    uid: u32,
    gid: u32,
    mode: u32,
    t: u64,
) -> FileInfo {
    FileInfo {
        path: PathBuf::from(path),
        is_dir,
        is_socket,
        uid,
        gid,
        mode,
        mtime: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(t)),
    }
}

fn h100() -> Inventory {
    let mut gpus = parse_smi_list_with_mig(&fixture("h100/nvidia-smi-L.txt"));
    gpus[0].minor = Some(0);
    Inventory {
        driver_version: "580.159.04".into(),
        cuda_version: Some("13.0".into()),
        gpus,
        source: "fixture h100".into(),
        simulated: false,
    }
}

fn healthy_engine() -> EngineInfo {
    EngineInfo {
        server_version: "28.5.2".into(),
        cdi_spec_dirs: vec!["/etc/cdi".into(), "/var/run/cdi".into()],
        discovered_devices: Some(vec!["nvidia.com/gpu=0".into(), "nvidia.com/gpu=all".into()]),
        runtimes: vec![
            ("io.containerd.runc.v2".into(), "".into()),
            ("runc".into(), "runc".into()),
        ],
        default_runtime: "runc".into(),
        ..Default::default()
    }
}

impl FakeHost {
    /// A healthy NixOS machine with the recorded H100 and the seed's configuration.
    fn healthy() -> FakeHost {
        let mut shows = BTreeMap::new();
        shows.insert(
            "nvidia-container-toolkit-cdi-generator".to_string(),
            Ok(fixture("gpu/doctor/generator-ok.show")),
        );
        shows.insert(
            "docker.service".to_string(),
            Ok(fixture("gpu/doctor/docker-execstart-nixos.show")),
        );
        shows.insert(
            "docker.socket".to_string(),
            Ok("LoadState=loaded\nActiveState=active\nSubState=running\nResult=success\n".into()),
        );
        let mut files = BTreeMap::new();
        files.insert(
            PathBuf::from(SPEC),
            (
                info(SPEC, false, false, 0, 0, 0o100644, BOOT + 30),
                fixture("h100/nvidia-container-toolkit.json"),
            ),
        );
        files.insert(
            PathBuf::from("/nix/store/cccc-daemon.json"),
            (
                info(
                    "/nix/store/cccc-daemon.json",
                    false,
                    false,
                    0,
                    0,
                    0o100444,
                    1,
                ),
                fixture("gpu/doctor/daemon-nixos.json"),
            ),
        );
        files.insert(
            PathBuf::from(ROOTFUL),
            (
                info(ROOTFUL, false, true, 0, DOCKER_GID, 0o140660, BOOT + 40),
                String::new(),
            ),
        );
        let mut dirs = BTreeMap::new();
        dirs.insert(
            PathBuf::from("/run/cdi"),
            info("/run/cdi", true, false, 0, 0, 0o40755, BOOT + 30),
        );
        FakeHost {
            shows,
            journal: String::new(),
            files,
            dirs,
            user: UserInfo {
                uid: 1000,
                name: "ryan".into(),
                groups: vec!["users".into(), "docker".into()],
                gids: vec![100, DOCKER_GID],
            },
            env: BTreeMap::from([("XDG_RUNTIME_DIR".to_string(), "/run/user/1000".to_string())]),
            engine: Ok(healthy_engine()),
            gpus: Ok(h100()),
            fixes: RefCell::new(Vec::new()),
            after_fix: None,
            state: RefCell::new(FakeHostState::default()),
        }
    }

    fn without_spec(mut self) -> FakeHost {
        self.files.remove(Path::new(SPEC));
        if let Ok(e) = self.engine.as_mut() {
            e.discovered_devices = Some(Vec::new());
        }
        self
    }

    fn spec_visible(&self) -> bool {
        self.state
            .borrow()
            .spec_present
            .unwrap_or_else(|| self.files.contains_key(Path::new(SPEC)))
    }
}

impl HostSource for FakeHost {
    fn systemctl_show(&self, unit: &str, _props: &[&str]) -> Result<String, HostError> {
        if unit == "nvidia-container-toolkit-cdi-generator" {
            if let Some(g) = &self.state.borrow().generator {
                return Ok(g.clone());
            }
        }
        self.shows.get(unit).cloned().unwrap_or_else(|| {
            Ok("LoadState=not-found\nActiveState=inactive\nSubState=dead\n".into())
        })
    }
    fn journal_tail(&self, _unit: &str, _lines: u32) -> Result<String, HostError> {
        Ok(self.journal.clone())
    }
    fn file_info(&self, path: &Path) -> Option<FileInfo> {
        if path == Path::new(SPEC) && !self.spec_visible() {
            return None;
        }
        if path == Path::new(SPEC) && self.state.borrow().spec_present == Some(true) {
            return Some(info(SPEC, false, false, 0, 0, 0o100644, BOOT + 500));
        }
        self.files
            .get(path)
            .map(|(i, _)| i.clone())
            .or_else(|| self.dirs.get(path).cloned())
    }
    fn list_dir(&self, path: &Path) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = self
            .files
            .keys()
            .filter(|p| p.parent() == Some(path))
            .filter(|p| p.as_path() != Path::new(SPEC) || self.spec_visible())
            .cloned()
            .collect();
        if path == Path::new("/run/cdi")
            && self.spec_visible()
            && !out.iter().any(|p| p == Path::new(SPEC))
        {
            out.push(PathBuf::from(SPEC));
        }
        out
    }
    fn read_to_string(&self, path: &Path) -> Result<String, HostError> {
        if path == Path::new(SPEC) && self.spec_visible() {
            return Ok(fixture("h100/nvidia-container-toolkit.json"));
        }
        self.files
            .get(path)
            .map(|(_, t)| t.clone())
            .ok_or_else(|| HostError::Read {
                path: path.to_path_buf(),
                message: "No such file or directory (os error 2)".into(),
            })
    }
    fn boot_time(&self) -> Option<SystemTime> {
        Some(SystemTime::UNIX_EPOCH + Duration::from_secs(BOOT))
    }
    fn user(&self) -> UserInfo {
        self.user.clone()
    }
    fn env(&self, key: &str) -> Option<String> {
        self.env.get(key).cloned()
    }
    fn docker_info(&self, _socket: &Path) -> Result<EngineInfo, String> {
        let mut e = self.engine.clone();
        if self.state.borrow().spec_present == Some(true) {
            if let Ok(i) = e.as_mut() {
                i.discovered_devices = healthy_engine().discovered_devices;
            }
        }
        e
    }
    fn gpus(&self) -> Result<Inventory, GpuError> {
        self.gpus.clone()
    }
    fn run_fix(&self, argv: &[&str]) -> Result<String, HostError> {
        self.fixes.borrow_mut().push(argv.join(" "));
        if let Some(f) = &self.after_fix {
            f(&mut self.state.borrow_mut());
        }
        Ok(String::new())
    }
}

fn step<'a>(r: &'a DoctorReport, name: &str) -> &'a doctor::Step {
    r.steps
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no step {name} in {}", r.render()))
}

fn problems(r: &DoctorReport) -> Vec<&'static str> {
    r.steps
        .iter()
        .filter(|s| s.status == StepStatus::Problem)
        .map(|s| s.name)
        .collect()
}

#[test]
fn healthy_nixos_h100_host_has_no_problem() {
    let r = doctor::run(&FakeHost::healthy());
    assert!(r.healthy, "{}", r.render());
    assert_eq!(r.exit_code(), 0);
    assert!(step(&r, "spec_matches_gpus").saw.contains("/dev/nvidia0"));
    assert!(step(&r, "spec_fresh").saw.contains("driver 580.159.04"));
    assert!(
        step(&r, "cdi_generator")
            .saw
            .contains("active (exited), status 0")
    );
    assert!(r.render().contains("--device nvidia.com/gpu=all"));
    // Order follows the write-up: spec, docker, generator, pitfall.
    let names: Vec<&str> = r.steps.iter().map(|s| s.name).collect();
    let pos = |n| names.iter().position(|x| *x == n).unwrap_or(usize::MAX);
    assert!(pos("spec_present") < pos("docker_cdi"));
    assert!(pos("docker_cdi") < pos("cdi_generator"));
    assert!(pos("cdi_generator") < pos("daemon_config"));
    let json = serde_json::to_value(&r).expect("serializes");
    assert_eq!(json["healthy"], true);
    assert_eq!(json["steps"][0]["name"], "nvidia_driver");
}

#[test]
fn spec_missing_says_restart_generator_then_docker() {
    let r = doctor::run(&FakeHost::healthy().without_spec());
    assert_eq!(r.exit_code(), 1);
    let lines = r.problem_lines();
    let line = lines
        .iter()
        .find(|l| l.starts_with("PROBLEM spec_present"))
        .unwrap_or_else(|| panic!("{}", r.render()));
    assert!(line.contains("sudo systemctl restart nvidia-container-toolkit-cdi-generator && sudo systemctl restart docker"), "{line}");
    assert!(problems(&r).contains(&"docker_cdi"), "{}", r.render());
}

#[test]
fn failed_generator_shows_journal_and_driver_not_loaded_hint() {
    let mut h = FakeHost::healthy().without_spec();
    h.shows.insert(
        "nvidia-container-toolkit-cdi-generator".into(),
        Ok(fixture("gpu/doctor/generator-failed.show")),
    );
    h.journal = fixture("gpu/doctor/generator-driver-not-loaded.journal");
    let r = doctor::run(&h);
    let g = step(&r, "cdi_generator");
    assert_eq!(g.status, StepStatus::Problem);
    assert!(
        g.saw
            .contains("failed (failed), result exit-code, status 1"),
        "{}",
        g.saw
    );
    assert!(
        g.fix
            .as_deref()
            .is_some_and(|f| f.contains("nixpkgs#451912"))
    );
    assert!(g.details.iter().any(|d| d.contains("Driver Not Loaded")));
    let text = r.render();
    assert!(
        text.contains("          Nov 26 13:20:01 gpu1 nvidia-cdi-generator"),
        "{text}"
    );
}

#[test]
fn manual_runtime_is_the_pitfall_in_config_and_engine() {
    let mut h = FakeHost::healthy();
    h.files.insert(
        PathBuf::from("/nix/store/cccc-daemon.json"),
        (
            info(
                "/nix/store/cccc-daemon.json",
                false,
                false,
                0,
                0,
                0o100444,
                1,
            ),
            fixture("gpu/doctor/daemon-manual-runtime.json"),
        ),
    );
    if let Ok(e) = h.engine.as_mut() {
        e.runtimes
            .push(("nvidia".into(), "nvidia-container-runtime".into()));
    }
    let r = doctor::run(&h);
    assert_eq!(
        problems(&r),
        vec!["daemon_config", "engine_runtimes"],
        "{}",
        r.render()
    );
    for l in r.problem_lines() {
        assert!(l.contains("nvidia (nvidia-container-runtime)"), "{l}");
        assert!(
            l.contains("remove virtualisation.docker.daemon.settings.runtimes"),
            "{l}"
        );
        assert!(l.contains("pkgs.nvidia-docker"), "{l}");
    }
    assert!(
        step(&r, "daemon_config")
            .saw
            .contains("/nix/store/cccc-daemon.json")
    );
}

#[test]
fn user_outside_docker_group_gets_extra_groups_fix() {
    let mut h = FakeHost::healthy();
    h.user.groups = vec!["users".into()];
    h.user.gids = vec![100];
    let r = doctor::run(&h);
    assert!(problems(&r).contains(&"docker_socket"), "{}", r.render());
    let line = r
        .problem_lines()
        .into_iter()
        .find(|l| l.starts_with("PROBLEM docker_socket"))
        .unwrap_or_default();
    assert!(
        line.contains("users.extraGroups.docker.members = [ \"ryan\" ]"),
        "{line}"
    );
}

#[test]
fn engine_down_says_restart_docker() {
    let mut h = FakeHost::healthy();
    h.engine = Err("cannot connect to /run/docker.sock: Connection refused".into());
    let r = doctor::run(&h);
    let line = r
        .problem_lines()
        .into_iter()
        .find(|l| l.starts_with("PROBLEM docker_cdi"))
        .unwrap_or_else(|| panic!("{}", r.render()));
    assert!(line.contains("the engine does not answer"), "{line}");
    assert!(
        line.contains("fix: sudo systemctl restart docker"),
        "{line}"
    );
    assert_eq!(step(&r, "engine_runtimes").status, StepStatus::Skipped);
}

#[test]
fn no_socket_at_all_is_a_problem_with_socket_activation_fix() {
    let mut h = FakeHost::healthy();
    h.files.remove(Path::new(ROOTFUL));
    let r = doctor::run(&h);
    let s = step(&r, "docker_socket");
    assert_eq!(s.status, StepStatus::Problem);
    assert!(
        s.fix
            .as_deref()
            .is_some_and(|f| f.contains("docker.socket"))
    );
}

#[test]
fn no_nvml_skips_gpu_steps_but_still_checks_the_rest() {
    let mut h = FakeHost::healthy();
    h.gpus = Err(GpuError::Unavailable {
        reason: "libnvidia-ml.so.1: cannot open shared object file".into(),
    });
    let r = doctor::run(&h);
    assert_eq!(step(&r, "nvidia_driver").status, StepStatus::Skipped);
    assert_eq!(step(&r, "spec_matches_gpus").status, StepStatus::Skipped);
    assert!(r.healthy, "{}", r.render());
}

#[test]
fn non_nixos_host_with_etc_cdi_spec_says_what_differs() {
    let mut h = FakeHost::healthy();
    h.shows.remove("nvidia-container-toolkit-cdi-generator");
    let (mut i, t) = h.files.remove(Path::new(SPEC)).expect("spec");
    i.path = PathBuf::from("/etc/cdi/nvidia.yaml");
    // The recorded spec is JSON; YAML is a superset, so it loads as nvidia.yaml too.
    h.files
        .insert(PathBuf::from("/etc/cdi/nvidia.yaml"), (i, t));
    h.shows.remove("docker.service");
    let r = doctor::run(&h);
    assert!(r.healthy, "{}", r.render());
    assert!(
        step(&r, "spec_present")
            .saw
            .contains("not NixOS's generated")
    );
    let g = step(&r, "cdi_generator");
    assert_eq!(g.status, StepStatus::Info);
    assert!(g.saw.contains("does not exist"));
}

#[test]
fn fix_restarts_generator_then_docker_and_rechecks() {
    let mut h = FakeHost::healthy().without_spec();
    h.user.uid = 0;
    h.after_fix = Some(Box::new(|s: &mut FakeHostState| {
        s.spec_present = Some(true);
    }));
    let r = doctor::run_with_fix(&h, true);
    assert_eq!(
        *h.fixes.borrow(),
        vec![
            "systemctl restart nvidia-container-toolkit-cdi-generator".to_string(),
            "systemctl restart docker".to_string()
        ]
    );
    assert!(r.healthy, "{}", r.render());
    assert!(
        r.before_fix
            .as_ref()
            .is_some_and(|b| b.iter().any(|s| s.status == StepStatus::Problem))
    );
    assert_eq!(r.fixes_applied.len(), 2);
}

#[test]
fn fix_never_runs_without_the_flag_or_as_non_root_or_for_config_problems() {
    let h = FakeHost::healthy().without_spec();
    let r = doctor::run_with_fix(&h, false);
    assert!(h.fixes.borrow().is_empty());
    assert!(!r.healthy);
    // Not root: the plan is reported, nothing runs.
    let r = doctor::run_with_fix(&h, true);
    assert!(h.fixes.borrow().is_empty());
    assert!(r.fixes_applied[0].outcome.contains("needs root"));
    // A configuration problem is never "fixed" by restarts.
    let mut h = FakeHost::healthy();
    h.user.uid = 0;
    if let Ok(e) = h.engine.as_mut() {
        e.runtimes
            .push(("nvidia".into(), "nvidia-container-runtime".into()));
    }
    let r = doctor::run_with_fix(&h, true);
    assert!(h.fixes.borrow().is_empty());
    assert!(!r.healthy);
}

#[test]
fn stale_spec_from_before_boot_is_reported() {
    let mut h = FakeHost::healthy();
    if let Some((i, _)) = h.files.get_mut(Path::new(SPEC)) {
        i.mtime = Some(SystemTime::UNIX_EPOCH + Duration::from_secs(BOOT - 86_400));
    }
    let r = doctor::run(&h);
    let s = step(&r, "spec_fresh");
    assert_eq!(s.status, StepStatus::Problem, "{}", r.render());
    assert!(s.saw.contains("before the current boot"));
}
