//! What a private engine is told: its options and the daemon.json written from them.
//!
//! Why a module of its own: `daemon_json` is also what `cdi-harness scenario nixos-eval
//! --against-sim` compares with NixOS's settings, so the configuration must be
//! computable without starting (or finding) an engine.

use std::path::PathBuf;
use std::time::Duration;

use super::rootless::RootlessOptions;

/// What the private engine is started with.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// The dockerd to run; `None` searches as [`super::find_dockerd`] does.
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

/// daemon.json for the private engine.
pub(super) fn daemon_config(opts: &EngineOptions, spec_dirs: &[PathBuf], marker: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
