//! `cdi-harness scenario init --from-host [PATH]`: a scenario file that describes this
//! machine, so that a user's own machine is one file away from both `cargo test` and
//! its NixOS VM test.
//!
//! What is written is what the machine shows through [`HostSource`] (the probes
//! `doctor` uses): the GPU count is `"auto"` (the driver's, whatever it is next time),
//! the default engine rootful or rootless from `DOCKER_HOST` and the sockets (and
//! `docker info`'s own answer), the `docker` group's members from `/etc/group`, and the
//! CDI spec directories `docker info` reports (as the daemon setting when they are not
//! the engine's defaults). What could not be seen is written as a comment, never guessed
//! silently. The text is parsed back with [`crate::scenario::parse`] before it is
//! returned, so a file this writes always loads.

use std::path::{Path, PathBuf};

use crate::host::HostSource;
use crate::scenario::ScenarioError;

/// The spec dirs an engine reads when its daemon config names none.
const ENGINE_DEFAULT_SPEC_DIRS: [&str; 2] = ["/etc/cdi", "/var/run/cdi"];

/// What `init` saw, before it is written as TOML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFacts {
    /// The rootless engine is the user's default (`DOCKER_HOST` or the only socket).
    pub rootless_default: bool,
    /// A rootless engine exists (its socket, or it is the default).
    pub rootless_enabled: bool,
    /// Members of the `docker` group.
    pub docker_group_members: Vec<String>,
    /// `docker info`'s CDI spec dirs, when the engine answered.
    pub cdi_spec_dirs: Option<Vec<String>>,
    /// One line each: what was seen, or could not be, for the file's header.
    pub notes: Vec<String>,
}

/// Reads the facts from the machine.
pub fn probe(host: &dyn HostSource) -> HostFacts {
    let mut notes = Vec::new();
    let user = host.user();
    let runtime_dir = host
        .env("XDG_RUNTIME_DIR")
        .unwrap_or_else(|| format!("/run/user/{}", user.uid));
    let rootless_socket = PathBuf::from(runtime_dir).join("docker.sock");
    let rootless_exists = host.file_info(&rootless_socket).is_some();
    let chosen = crate::select::default_engine_socket(host);
    let mut rootless_default = match &chosen {
        Ok((_, p)) => *p == rootless_socket,
        Err(_) => false,
    };
    let mut cdi_spec_dirs = None;
    match &chosen {
        Ok((how, path)) => match host.docker_info(path) {
            Ok(info) => {
                // The engine knows best whether it is rootless (DOCKER_HOST may name
                // a rootless socket elsewhere).
                rootless_default = info.rootless;
                notes.push(format!(
                    "engine: {} ({how}), Docker {}, {}, CDI spec dirs: {}",
                    path.display(),
                    info.server_version,
                    if info.rootless { "rootless" } else { "rootful" },
                    if info.cdi_spec_dirs.is_empty() {
                        "none (CDI is off)".to_string()
                    } else {
                        info.cdi_spec_dirs.join(", ")
                    }
                ));
                cdi_spec_dirs = Some(info.cdi_spec_dirs);
            }
            Err(e) if host.file_info(path).is_none() => {
                // No socket anywhere: nothing says rootless, so NixOS's default.
                rootless_default = false;
                notes.push(format!(
                    "engine: none found ({e}): the rootful default assumed, spec dirs unknown"
                ));
            }
            Err(e) => notes.push(format!(
                "engine: {} ({how}) did not answer ({e}): rootful/rootless taken from the socket path, spec dirs unknown",
                path.display()
            )),
        },
        Err(e) => notes.push(format!("engine: {e}")),
    }
    let docker_group_members = match host.read_to_string(Path::new("/etc/group")) {
        Ok(text) => group_members(&text, "docker"),
        Err(e) => {
            notes.push(format!("docker group: {e}"));
            Vec::new()
        }
    };
    match host.gpus() {
        Ok(inv) => notes.push(format!("GPUs: {}", inv.summary())),
        Err(e) => notes.push(format!("GPUs: {e}")),
    }
    HostFacts {
        rootless_default,
        rootless_enabled: rootless_exists || rootless_default,
        docker_group_members,
        cdi_spec_dirs,
        notes,
    }
}

/// The members of `group` in `/etc/group` text (`name:x:gid:a,b`).
pub fn group_members(etc_group: &str, group: &str) -> Vec<String> {
    etc_group
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            (f.next() == Some(group)).then(|| f.nth(2).unwrap_or_default())
        })
        .flat_map(|m| m.split(',').map(str::trim).filter(|m| !m.is_empty()))
        .map(str::to_string)
        .collect()
}

/// A TOML string (basic, escaped).
fn quote(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// The scenario text for these facts; `name` is the machine's name for the description.
pub fn render(facts: &HostFacts, name: &str) -> String {
    let mut out = String::new();
    out.push_str(
        "# Written by `cdi-harness scenario init --from-host`: this machine as a scenario.\n",
    );
    for n in &facts.notes {
        out.push_str(&format!("# {}\n", n.replace('\n', " ")));
    }
    out.push_str(&format!(
        "description = {}\n\n",
        quote(&format!(
            "The machine {name}, as `cdi-harness scenario init --from-host` saw it: Docker with CDI through hardware.nvidia-container-toolkit.enable, the {} engine as the default, the GPUs the driver reports.",
            if facts.rootless_default { "rootless" } else { "rootful" }
        ))
    ));
    out.push_str("[machine.virtualisation.docker]\nenable = true\n");
    out.push_str(&format!(
        "rootless = {{ enable = {}, setSocketVariable = {} }}\n",
        facts.rootless_enabled, facts.rootless_default
    ));
    if let Some(dirs) = &facts.cdi_spec_dirs {
        if !dirs.is_empty() && dirs.iter().map(String::as_str).ne(ENGINE_DEFAULT_SPEC_DIRS) {
            let list: Vec<String> = dirs.iter().map(|d| quote(d)).collect();
            out.push_str(&format!(
                "\n# docker info's spec dirs are not the engine's defaults.\n[machine.virtualisation.docker.daemon.settings]\ncdi-spec-dirs = [{}]\n",
                list.join(", ")
            ));
        }
    }
    out.push_str("\n[machine.hardware.nvidia-container-toolkit]\nenable = true\n");
    if !facts.docker_group_members.is_empty() {
        let list: Vec<String> = facts
            .docker_group_members
            .iter()
            .map(|m| quote(m))
            .collect();
        out.push_str(&format!(
            "\n[machine.users.extraGroups.docker]\nmembers = [{}]\n",
            list.join(", ")
        ));
    }
    out.push_str(
        "\n# \"auto\": the GPUs the driver reports (two simulated ones on sim and in the VM test).\n[gpus]\ncount = \"auto\"\n",
    );
    out
}

/// The scenario for this machine, checked by parsing it back as `path` (its file name
/// names the scenario).
pub fn from_host(host: &dyn HostSource, path: &Path, name: &str) -> Result<String, ScenarioError> {
    let text = render(&probe(host), name);
    crate::scenario::parse(path, &text)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{GpuCount, Place};
    use crate::testutil::FakeMachine;

    fn inventory() -> crate::gpu::Inventory {
        crate::gpu::sim_inventory(3)
    }

    #[test]
    fn a_rootful_host_becomes_a_scenario_that_loads() {
        let m = FakeMachine::new(Ok(inventory()), true);
        let text = from_host(&m, Path::new("my-box.toml"), "box").expect("loads");
        let s = crate::scenario::parse(Path::new("my-box.toml"), &text).expect("parses");
        assert_eq!(s.name, "my-box");
        assert_eq!(s.gpus.declared, GpuCount::Auto);
        assert!(!s.facts.rootless_default && !s.facts.rootless_enabled);
        assert_eq!(s.facts.docker_group_members, ["ryan", "alice"]);
        assert!(s.facts.toolkit_enabled && s.facts.docker_enabled);
        assert_eq!(s.applies_to, Place::ALL.to_vec());
        assert!(text.contains("Docker 28.5.2, rootful"), "{text}");
        assert!(text.contains("simulated driver"), "{text}");
        assert!(!text.contains("cdi-spec-dirs"), "{text}");
    }

    #[test]
    fn a_rootless_default_and_odd_spec_dirs_are_written() {
        let mut m = FakeMachine::new(Ok(inventory()), true);
        m.sockets = vec![PathBuf::from("/run/user/1000/docker.sock")];
        if let Ok(info) = m.engine.as_mut() {
            info.rootless = true;
            info.cdi_spec_dirs = vec!["/etc/cdi".into(), "/opt/cdi \"x\"".into()];
        }
        let text = from_host(&m, Path::new("mine.toml"), "box").expect("loads");
        let s = crate::scenario::parse(Path::new("mine.toml"), &text).expect("parses");
        assert!(s.facts.rootless_default && s.facts.rootless_enabled);
        let dirs = &s.machine["virtualisation"]["docker"]["daemon"]["settings"]["cdi-spec-dirs"];
        assert_eq!(dirs[1].as_str(), Some("/opt/cdi \"x\""));
    }

    #[test]
    fn what_cannot_be_seen_is_a_comment() {
        let mut m = FakeMachine::new(
            Err(crate::gpu::GpuError::Unavailable {
                reason: "no libnvidia-ml".into(),
            }),
            true,
        );
        m.sockets.clear();
        let text = from_host(&m, Path::new("x.toml"), "box").expect("loads");
        assert!(text.contains("# engine: none found"), "{text}");
        assert!(text.contains("/run/user/1000/docker.sock"), "{text}");
        assert!(text.contains("rootful default assumed"), "{text}");
        assert!(text.contains("# GPUs: no NVML"), "{text}");
        let s = crate::scenario::parse(Path::new("x.toml"), &text).expect("parses");
        assert!(!s.facts.rootless_default);
    }

    #[test]
    fn group_members_come_from_the_named_group_only() {
        let g = "dockerx:x:1:bob\ndocker:x:131:ryan, alice\nusers:x:100:carol\n";
        assert_eq!(group_members(g, "docker"), ["ryan", "alice"]);
        assert!(group_members("docker:x:131:\n", "docker").is_empty());
    }
}
