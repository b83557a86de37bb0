//! `cdi-harness scenario nixos-eval`: a scenario's machine (or one's own NixOS module, or
//! the nightly module) evaluated through nixpkgs' own module system, before any VM boots.
//!
//! The harness reads a scenario's `[machine]` table by itself ([`crate::scenario`]), but
//! only NixOS decides what the machine becomes: whether an option exists, whether two
//! definitions conflict, what `daemon.json` Docker gets. This module runs
//! `nix-instantiate` on `nixos-tests/eval/evaluate.nix` (embedded in the binary, written
//! to a temporary directory with the modules it imports) against either
//!
//! - a nixpkgs checkout (`--nixpkgs DIR`, its own `nixos/lib/eval-config.nix`), or
//! - the evaluation kit (`--kit DIR`: nixpkgs' `lib` and its Docker and NVIDIA container
//!   toolkit modules, the rest of NixOS stood in by `nixos-tests/eval/nixos-stubs.nix`).
//!
//! nixpkgs' own error text (unknown option, wrong type, conflicting definitions, each
//! naming the file) is passed through verbatim. Evaluation uses a private Nix store in
//! the temporary directory, so neither `/nix` nor a daemon is needed.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;

use crate::scenario::Scenario;

/// The evaluator's Nix files, embedded so that an installed binary evaluates exactly the
/// modules its VM tests run. Paths are relative to `nixos-tests/`.
const NIX_FILES: &[(&str, &str)] = &[
    (
        "eval/evaluate.nix",
        include_str!("../../nixos-tests/eval/evaluate.nix"),
    ),
    (
        "eval/kit.nix",
        include_str!("../../nixos-tests/eval/kit.nix"),
    ),
    (
        "eval/nixos-stubs.nix",
        include_str!("../../nixos-tests/eval/nixos-stubs.nix"),
    ),
    (
        "eval/pkgs.nix",
        include_str!("../../nixos-tests/eval/pkgs.nix"),
    ),
    (
        "eval/polyfill.nix",
        include_str!("../../nixos-tests/eval/polyfill.nix"),
    ),
    (
        "eval/utils.nix",
        include_str!("../../nixos-tests/eval/utils.nix"),
    ),
    ("node.nix", include_str!("../../nixos-tests/node.nix")),
    (
        "nightly-module.nix",
        include_str!("../../nixos-tests/nightly-module.nix"),
    ),
    (
        "lib/machine-module.nix",
        include_str!("../../nixos-tests/lib/machine-module.nix"),
    ),
    (
        "lib/scenario.nix",
        include_str!("../../nixos-tests/lib/scenario.nix"),
    ),
    (
        "lib/setup.nix",
        include_str!("../../nixos-tests/lib/setup.nix"),
    ),
    ("lib/sim.nix", include_str!("../../nixos-tests/lib/sim.nix")),
    ("lib/u64.nix", include_str!("../../nixos-tests/lib/u64.nix")),
    (
        "modules/gpu-passthrough.nix",
        include_str!("../../nixos-tests/modules/gpu-passthrough.nix"),
    ),
    (
        "modules/scenario-machine.nix",
        include_str!("../../nixos-tests/modules/scenario-machine.nix"),
    ),
    (
        "modules/simulated-gpus.nix",
        include_str!("../../nixos-tests/modules/simulated-gpus.nix"),
    ),
];

/// The systemd unit NixOS's toolkit module generates the CDI spec with.
pub const GENERATOR_UNIT: &str = "nvidia-container-toolkit-cdi-generator";

/// The CDI spec directories a NixOS engine reads when daemon.json names none (Docker's
/// defaults); the sim backend gives its private engine two scratch directories that
/// stand for them.
const DEFAULT_SPEC_DIRS: [&str; 2] = ["/etc/cdi", "/var/run/cdi"];

/// Why an evaluation could not be made or was rejected.
#[derive(Debug, thiserror::Error)]
pub enum NixEvalError {
    /// Neither `--nixpkgs`, `--kit`, the flake's pinned nixpkgs nor a kit beside the
    /// repository was found.
    #[error(
        "no nixpkgs to evaluate against ({tried}); pass --nixpkgs DIR (a nixpkgs checkout of the \
         release you run, e.g. `git clone --depth 1 --branch nixos-25.11` of NixOS/nixpkgs; the \
         flake's pinned one is the `path` that `nix flake archive --json` prints for input \
         nixpkgs) or --kit DIR (the evaluation kit, nixpkgs' lib and its Docker and toolkit \
         modules)"
    )]
    NoNixpkgs {
        /// What was looked for, in order.
        tried: String,
    },
    /// The directory given does not hold what it should.
    #[error("{flag} {}: {reason}", path.display())]
    BadSource {
        /// `--nixpkgs` or `--kit`.
        flag: &'static str,
        /// The directory.
        path: PathBuf,
        /// What is missing, and what to give instead.
        reason: String,
    },
    /// `nix-instantiate` is not installed.
    #[error(
        "cannot run nix-instantiate: {source} (install Nix; on Debian or Ubuntu `apt-get install nix-bin`)"
    )]
    NoNix {
        /// The spawn error.
        source: std::io::Error,
    },
    /// The temporary directory for the evaluator's files could not be made.
    #[error("cannot prepare the evaluator's files in a temporary directory: {0} (check TMPDIR)")]
    Scratch(std::io::Error),
    /// nixpkgs rejected the configuration: its own message, which names the file.
    #[error("{target}: rejected by nixpkgs' module system:\n{message}")]
    Rejected {
        /// What was evaluated.
        target: String,
        /// nix-instantiate's error output, verbatim (minus Nix's own setup warnings).
        message: String,
    },
    /// nix-instantiate printed something that is not the evaluator's JSON.
    #[error(
        "{target}: unexpected output of nix-instantiate: {reason} (a bug in nixos-tests/eval/evaluate.nix?)"
    )]
    Output {
        /// What was evaluated.
        target: String,
        /// The parse error.
        reason: String,
    },
}

impl NixEvalError {
    /// 1 when nixpkgs rejected the configuration (a finding), 2 when nothing could be
    /// evaluated (usage or setup).
    pub fn exit_code(&self) -> u8 {
        match self {
            NixEvalError::Rejected { .. } => 1,
            _ => 2,
        }
    }
}

/// What the modules are evaluated with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A nixpkgs checkout: `nixos/lib/eval-config.nix`.
    Nixpkgs(PathBuf),
    /// The evaluation kit: `lib.evalModules` over its modules and the project's stubs.
    Kit(PathBuf),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Nixpkgs(p) => write!(f, "nixpkgs {}", p.display()),
            Source::Kit(p) => write!(f, "kit {}", p.display()),
        }
    }
}

impl Source {
    /// Checks that the directory holds what this source needs.
    pub fn checked(self) -> Result<Source, NixEvalError> {
        let (flag, dir, needs): (_, _, &[&str]) = match &self {
            Source::Nixpkgs(d) => ("--nixpkgs", d, &["nixos/lib/eval-config.nix"]),
            Source::Kit(d) => (
                "--kit",
                d,
                &[
                    "lib/default.nix",
                    "nixos/modules/virtualisation/docker.nix",
                    "nixos/modules/virtualisation/docker-rootless.nix",
                    "nixos/modules/services/hardware/nvidia-container-toolkit/default.nix",
                    "pkgs/pkgs-lib/formats.nix",
                ],
            ),
        };
        for n in needs {
            if !dir.join(n).is_file() {
                return Err(NixEvalError::BadSource {
                    flag,
                    path: dir.clone(),
                    reason: format!(
                        "has no {n}; {}",
                        if flag == "--kit" {
                            "give the evaluation kit's directory (with lib/ and nixos/modules/)"
                        } else {
                            "give the root of a nixpkgs checkout"
                        }
                    ),
                });
            }
        }
        let dir = dir.canonicalize().unwrap_or_else(|_| dir.clone());
        Ok(match self {
            Source::Nixpkgs(_) => Source::Nixpkgs(dir),
            Source::Kit(_) => Source::Kit(dir),
        })
    }

    /// The default when neither `--nixpkgs` nor `--kit` is given: the flake's pinned
    /// nixpkgs when a Nix installation (`/nix/store`) can resolve it, else the kit at
    /// `../shared/nixpkgs-eval` beside the repository (the project's CI machine).
    pub fn default_for(start: &Path) -> Result<Source, NixEvalError> {
        let mut tried = Vec::new();
        let root = start
            .ancestors()
            .find(|d| d.join("flake.nix").is_file() && d.join("flake.lock").is_file());
        match root {
            None => tried.push(format!(
                "no flake.nix with flake.lock in {} or above",
                start.display()
            )),
            Some(root) => {
                match pinned_nixpkgs(root) {
                    Ok(p) => return Source::Nixpkgs(p).checked(),
                    Err(why) => tried.push(format!("the flake's pinned nixpkgs: {why}")),
                }
                let kit = root.join("../shared/nixpkgs-eval");
                if kit.join("PROVENANCE.md").is_file() {
                    return Source::Kit(kit).checked();
                }
                tried.push(format!("no evaluation kit at {}", kit.display()));
            }
        }
        Err(NixEvalError::NoNixpkgs {
            tried: tried.join("; "),
        })
    }
}

/// The flake's `nixpkgs` input as the user's Nix resolves it (`nix flake archive`).
fn pinned_nixpkgs(root: &Path) -> Result<PathBuf, String> {
    if !Path::new("/nix/store").is_dir() {
        return Err("no Nix installation here (/nix/store)".into());
    }
    let out = Command::new("nix")
        .args([
            "--extra-experimental-features",
            "nix-command flakes",
            "flake",
            "archive",
            "--json",
        ])
        .arg(root)
        .output()
        .map_err(|e| format!("cannot run nix: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!(
            "`nix flake archive` failed: {}",
            err.lines().last().unwrap_or("").trim()
        ));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("`nix flake archive --json` printed no JSON: {e}"))?;
    v["inputs"]["nixpkgs"]["path"]
        .as_str()
        .map(PathBuf::from)
        .ok_or_else(|| "`nix flake archive --json` names no nixpkgs input".into())
}

/// How a scenario's machine is assembled before it is evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Flavour {
    /// The `[machine]` table alone (its forced values with `lib.mkForce`).
    Machine,
    /// The VM test with simulated GPUs (`nixos-tests/node.nix`).
    Simulated,
    /// The VM test with GPUs passed through (any PCI addresses will do to evaluate).
    Passthrough,
}

impl Flavour {
    fn as_str(self) -> &'static str {
        match self {
            Flavour::Machine => "machine",
            Flavour::Simulated => "simulated",
            Flavour::Passthrough => "passthrough",
        }
    }
}

/// The nightly module's two evaluated configurations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NightlyVariant {
    /// Enabled, with only the required `flake` set.
    Defaults,
    /// Every option set, with values that need quoting for systemd.
    Full,
}

/// One configuration to evaluate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A scenario file's machine.
    Scenario {
        /// The scenario file.
        file: PathBuf,
        /// How its machine is assembled.
        flavour: Flavour,
    },
    /// A NixOS module file: one's own machine configuration.
    Module {
        /// The `.nix` file.
        file: PathBuf,
    },
    /// `services.cdi-harness.nightly` (`nixos-tests/nightly-module.nix`).
    Nightly(NightlyVariant),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Scenario { file, flavour } => {
                write!(f, "{} ({})", file.display(), flavour.as_str())
            }
            Target::Module { file } => write!(f, "{}", file.display()),
            Target::Nightly(NightlyVariant::Defaults) => {
                write!(f, "nightly module (enabled, defaults)")
            }
            Target::Nightly(NightlyVariant::Full) => write!(f, "nightly module (every option set)"),
        }
    }
}

/// What the evaluator reports of one configuration (`evaluate.nix`'s `summary`).
#[derive(Debug, Clone, PartialEq, serde::Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// `virtualisation.docker.enable` and its effective `daemon.settings`.
    pub docker: Engine,
    /// The rootless engine: enabled, the default socket, its `daemon.settings`.
    pub rootless: Rootless,
    /// The CDI generator unit and what depends on it.
    pub generator: Generator,
    /// `users.groups.docker.members` (`users.extraGroups` is its alias).
    pub docker_group_members: Vec<String>,
    /// Messages of the assertions that do not hold (the system would not build).
    pub failed_assertions: Vec<String>,
    /// Warnings the system build would print.
    pub warnings: Vec<String>,
    /// The nightly unit and timer, when the nightly module is enabled.
    pub nightly: Option<serde_json::Value>,
}

/// The rootful engine.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, Serialize)]
pub struct Engine {
    /// `virtualisation.docker.enable`.
    pub enable: bool,
    /// `virtualisation.docker.daemon.settings`: the engine's daemon.json.
    pub settings: serde_json::Value,
}

/// The rootless engine.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rootless {
    /// `virtualisation.docker.rootless.enable`.
    pub enable: bool,
    /// `…rootless.setSocketVariable`: it is the users' default DOCKER_HOST.
    pub set_socket_variable: bool,
    /// `…rootless.daemon.settings`.
    pub settings: serde_json::Value,
}

/// `systemd.services.nvidia-container-toolkit-cdi-generator`.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Generator {
    /// Whether the unit exists (and is enabled).
    pub exists: bool,
    /// Its `requiredBy` (docker.service on a Docker machine).
    pub required_by: Vec<String>,
    /// Its `wantedBy`.
    pub wanted_by: Vec<String>,
    /// Services whose own `requires` name it.
    pub required_from: Vec<String>,
}

/// The sim backend's daemon.json for a scenario against NixOS's `daemon.settings`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SimAgreement {
    /// The daemon.json the sim backend gives the scenario's private engine (its spec
    /// dirs shown as the machine directories they stand for).
    pub sim_daemon_json: serde_json::Value,
    /// One line per compared key that differs; empty when they agree.
    pub differences: Vec<String>,
}

/// One evaluated configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    /// What was evaluated.
    pub target: String,
    /// NixOS's view of it.
    pub summary: Summary,
    /// The agreement with the sim backend, when asked for (scenarios only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sim: Option<SimAgreement>,
}

impl Evaluation {
    /// Whether the configuration would build and (when compared) agrees with the sim.
    pub fn ok(&self) -> bool {
        self.summary.failed_assertions.is_empty()
            && self.sim.as_ref().is_none_or(|s| s.differences.is_empty())
    }

    /// The human-readable report: settings, rootless, generator, assertions, warnings.
    pub fn render(&self) -> String {
        let s = &self.summary;
        let json = |v: &serde_json::Value| serde_json::to_string(v).unwrap_or_default();
        let mut out = format!("== {}\n", self.target);
        out += &format!(
            "docker{}: daemon.settings = {}\n",
            if s.docker.enable {
                ""
            } else {
                " (not enabled)"
            },
            json(&s.docker.settings)
        );
        out += &format!(
            "rootless docker{}: daemon.settings = {}\n",
            match (s.rootless.enable, s.rootless.set_socket_variable) {
                (false, _) => " (not enabled)",
                (true, true) => " (the users' default socket)",
                (true, false) => "",
            },
            json(&s.rootless.settings)
        );
        let g = &s.generator;
        if g.exists {
            let list = |l: &[String]| {
                if l.is_empty() {
                    "nothing".to_string()
                } else {
                    l.join(", ")
                }
            };
            out += &format!(
                "{GENERATOR_UNIT}: exists; required by {}; wanted by {}; required from {}\n",
                list(&g.required_by),
                list(&g.wanted_by),
                list(&g.required_from)
            );
        } else {
            out += &format!("{GENERATOR_UNIT}: does not exist\n");
        }
        if !s.docker_group_members.is_empty() {
            out += &format!("docker group: {}\n", s.docker_group_members.join(", "));
        }
        if let Some(n) = &s.nightly {
            out += &format!("nightly: {}\n", json(n));
        }
        if s.failed_assertions.is_empty() {
            out += "assertions: all hold\n";
        }
        for a in &s.failed_assertions {
            out += &format!("FAILED assertion: {}\n", a.trim());
        }
        for w in &s.warnings {
            out += &format!("warning: {}\n", w.trim());
        }
        if let Some(sim) = &self.sim {
            if sim.differences.is_empty() {
                out += "sim backend: its daemon.json agrees (features.cdi, runtimes, spec dirs)\n";
            }
            for d in &sim.differences {
                out += &format!("DISAGREES with the sim backend: {d}\n");
            }
        }
        out
    }
}

/// A prepared evaluator: its Nix files and a private Nix store in a temporary directory.
pub struct Evaluator {
    source: Source,
    dir: tempfile::TempDir,
    nix_instantiate: PathBuf,
}

impl Evaluator {
    /// Writes the evaluator's files; `nix_instantiate` is the program to run
    /// (`nix-instantiate` on PATH by default).
    pub fn new(source: Source, nix_instantiate: Option<PathBuf>) -> Result<Self, NixEvalError> {
        let dir = tempfile::Builder::new()
            .prefix("cdih-nixos-eval-")
            .tempdir()
            .map_err(NixEvalError::Scratch)?;
        let tests = dir.path().join("nixos-tests");
        for (rel, text) in NIX_FILES {
            let path = tests.join(rel);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(NixEvalError::Scratch)?;
            }
            std::fs::write(&path, text).map_err(NixEvalError::Scratch)?;
        }
        let conf = dir.path().join("conf");
        std::fs::create_dir_all(&conf).map_err(NixEvalError::Scratch)?;
        // No build users: nothing is built, and Debian's nix-bin warns about the
        // missing nixbld group otherwise.
        std::fs::write(conf.join("nix.conf"), "build-users-group =\n")
            .map_err(NixEvalError::Scratch)?;
        Ok(Evaluator {
            source,
            dir,
            nix_instantiate: nix_instantiate.unwrap_or_else(|| PathBuf::from("nix-instantiate")),
        })
    }

    /// What this evaluator evaluates against.
    pub fn source(&self) -> &Source {
        &self.source
    }

    /// Evaluates one configuration. `scenario` (the parsed file of a scenario target)
    /// adds the agreement with the sim backend's daemon.json.
    pub fn evaluate(
        &self,
        target: &Target,
        against_sim: Option<&Scenario>,
    ) -> Result<Evaluation, NixEvalError> {
        let label = format!("{target}, {}", self.source);
        let root = self.dir.path();
        let mut cmd = Command::new(&self.nix_instantiate);
        cmd.args(["--eval", "--strict", "--json"])
            .arg(root.join("nixos-tests/eval/evaluate.nix"));
        match &self.source {
            Source::Kit(d) => cmd.arg("--arg").arg("kit").arg(nix_path(d)),
            Source::Nixpkgs(d) => cmd.arg("--arg").arg("nixpkgs").arg(nix_path(d)),
        };
        let absolute = |f: &Path| std::path::absolute(f).unwrap_or_else(|_| f.to_path_buf());
        match target {
            Target::Scenario { file, flavour } => {
                cmd.args(["--argstr", "target", "scenario", "--arg", "file"])
                    .arg(nix_path(&absolute(file)))
                    .args(["--argstr", "flavour", flavour.as_str()]);
            }
            Target::Module { file } => {
                cmd.args(["--argstr", "target", "module", "--arg", "file"])
                    .arg(nix_path(&absolute(file)));
            }
            Target::Nightly(v) => {
                cmd.args(["--argstr", "target", "nightly", "--argstr", "variant"])
                    .arg(match v {
                        NightlyVariant::Defaults => "defaults",
                        NightlyVariant::Full => "full",
                    });
            }
        }
        // A private, throw-away Nix: its own store and state, no user or system
        // configuration, no channels (as .ci/nix-check).
        cmd.env(
            "NIX_REMOTE",
            format!("local?root={}", root.join("nix-root").display()),
        )
        .env("NIX_CONF_DIR", root.join("conf"))
        .env("NIX_USER_CONF_FILES", root.join("conf/nix.conf"))
        .env("XDG_CACHE_HOME", root.join("cache"))
        .env("XDG_STATE_HOME", root.join("state"))
        .env("XDG_DATA_HOME", root.join("data"))
        .env("NIX_PATH", "");
        let out = cmd
            .output()
            .map_err(|source| NixEvalError::NoNix { source })?;
        if !out.status.success() {
            return Err(NixEvalError::Rejected {
                target: label,
                message: nix_message(&String::from_utf8_lossy(&out.stderr)),
            });
        }
        let summary: Summary =
            serde_json::from_slice(&out.stdout).map_err(|e| NixEvalError::Output {
                target: label.clone(),
                reason: e.to_string(),
            })?;
        let sim = against_sim.map(|s| agreement(&summary.docker.settings, s));
        Ok(Evaluation {
            target: label,
            summary,
            sim,
        })
    }
}

/// A path as a Nix path expression (absolute; quoted so spaces survive).
fn nix_path(p: &Path) -> String {
    let s = p.display().to_string();
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+".contains(c))
    {
        s
    } else {
        format!("/. + {}", serde_json::Value::String(s))
    }
}

/// nix-instantiate's error output without Nix's own setup noise.
fn nix_message(stderr: &str) -> String {
    stderr
        .lines()
        .filter(|l| !l.starts_with("warning: the group 'nixbld'"))
        .collect::<Vec<_>>()
        .join("\n")
        .trim_end()
        .to_string()
}

/// The daemon.json the sim backend gives this scenario's private engine, built by the
/// same code (`sim::daemon_json`) from the options `runner::start_sim` derives from the
/// scenario; its scratch spec dirs are shown as the machine dirs they stand for.
pub fn sim_daemon_json(s: &Scenario) -> serde_json::Value {
    let opts = crate::runner::sim_engine_config(s);
    let dirs: Vec<PathBuf> = DEFAULT_SPEC_DIRS.iter().map(PathBuf::from).collect();
    crate::sim::daemon_json(&opts, &dirs, "cdih-sim")
}

/// NixOS's daemon settings against the sim's daemon.json: `features.cdi`, `runtimes`
/// (absent equals empty), and `cdi-spec-dirs` where NixOS sets them (else the engine's
/// defaults, which the sim's two directories stand for).
fn agreement(settings: &serde_json::Value, s: &Scenario) -> SimAgreement {
    let sim = sim_daemon_json(s);
    let mut differences = Vec::new();
    let cdi = |v: &serde_json::Value| v["features"]["cdi"].as_bool().unwrap_or(false);
    if cdi(settings) != cdi(&sim) {
        differences.push(format!(
            "features.cdi: NixOS {}, sim {}",
            settings["features"]["cdi"], sim["features"]["cdi"]
        ));
    }
    let runtimes = |v: &serde_json::Value| match &v["runtimes"] {
        serde_json::Value::Null => serde_json::json!({}),
        r => r.clone(),
    };
    if runtimes(settings) != runtimes(&sim) {
        differences.push(format!(
            "runtimes: NixOS {}, sim {}",
            runtimes(settings),
            runtimes(&sim)
        ));
    }
    if let Some(dirs) = settings.get("cdi-spec-dirs") {
        if *dirs != sim["cdi-spec-dirs"] {
            differences.push(format!(
                "cdi-spec-dirs: NixOS {dirs}, sim {}",
                sim["cdi-spec-dirs"]
            ));
        }
    }
    SimAgreement {
        sim_daemon_json: sim,
        differences,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every Nix file the evaluator needs is embedded; a new one under nixos-tests/
    /// must be added to NIX_FILES (or here, when only the flake uses it).
    #[test]
    fn every_nixos_tests_file_is_embedded_or_flake_only() {
        let flake_only = ["default.nix", "make-test.nix"];
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../nixos-tests");
        let mut missing = Vec::new();
        let mut stack = vec![root.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).expect("nixos-tests is readable") {
                let p = e.expect("entry").path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "nix") {
                    let rel = p
                        .strip_prefix(&root)
                        .expect("under root")
                        .display()
                        .to_string();
                    if !flake_only.contains(&rel.as_str())
                        && !NIX_FILES.iter().any(|(n, _)| *n == rel)
                    {
                        missing.push(rel);
                    }
                }
            }
        }
        assert!(missing.is_empty(), "not embedded in NIX_FILES: {missing:?}");
    }

    fn scenario(extra: &str) -> Scenario {
        let text = format!(
            "description = \"d\"\n[machine.virtualisation.docker]\nenable = true\n\
             [machine.hardware.nvidia-container-toolkit]\nenable = true\n[gpus]\ncount = 1\n{extra}"
        );
        crate::scenario::parse(Path::new("scenarios/t.toml"), &text).expect("parses")
    }

    #[test]
    fn the_sim_daemon_json_follows_the_scenario() {
        let plain = sim_daemon_json(&scenario(""));
        assert_eq!(plain["features"]["cdi"], true);
        assert_eq!(
            plain["cdi-spec-dirs"],
            serde_json::json!(["/etc/cdi", "/var/run/cdi"])
        );
        assert!(plain.get("runtimes").is_none());
        let off = sim_daemon_json(&scenario(
            "[machine.force.virtualisation.docker.daemon.settings.features]\ncdi = false\n",
        ));
        assert_eq!(off["features"]["cdi"], false);
    }

    #[test]
    fn agreement_compares_cdi_runtimes_and_set_spec_dirs() {
        let s = scenario("");
        let nixos = serde_json::json!({ "features": { "cdi": true }, "group": "docker" });
        assert!(agreement(&nixos, &s).differences.is_empty());
        let off = serde_json::json!({ "features": { "cdi": false } });
        assert_eq!(agreement(&off, &s).differences.len(), 1);
        let runtime = serde_json::json!({
            "features": { "cdi": true },
            "runtimes": { "nvidia": { "path": "x" } },
            "cdi-spec-dirs": ["/etc/cdi"],
        });
        let d = agreement(&runtime, &s).differences;
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(d[0].starts_with("runtimes:") && d[1].starts_with("cdi-spec-dirs:"));
    }

    #[test]
    fn sources_are_checked_for_what_they_need() {
        let empty = tempfile::tempdir().expect("tempdir");
        let e = Source::Kit(empty.path().into())
            .checked()
            .expect_err("an empty kit");
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("has no lib/default.nix"), "{e}");
        let e = Source::Nixpkgs(empty.path().into())
            .checked()
            .expect_err("an empty nixpkgs");
        assert!(
            e.to_string().contains("has no nixos/lib/eval-config.nix"),
            "{e}"
        );
    }

    #[test]
    fn no_default_source_says_how_to_get_one() {
        let empty = tempfile::tempdir().expect("tempdir");
        let e = Source::default_for(empty.path()).expect_err("nothing there");
        assert_eq!(e.exit_code(), 2);
        let text = e.to_string();
        assert!(
            text.contains("--nixpkgs DIR") && text.contains("--kit DIR"),
            "{text}"
        );
    }

    #[test]
    fn paths_with_spaces_stay_one_nix_path() {
        assert_eq!(nix_path(Path::new("/a/b.toml")), "/a/b.toml");
        assert_eq!(nix_path(Path::new("/a b/c")), "/. + \"/a b/c\"");
    }
}

/// The command line of `cdi-harness scenario nixos-eval`.
pub mod cli {
    use std::path::PathBuf;

    use super::{Evaluator, Flavour, NightlyVariant, NixEvalError, Source, Target};

    /// `--flavour` values.
    #[derive(Clone, Copy, Debug, clap::ValueEnum)]
    pub enum FlavourArg {
        /// The scenario's `[machine]` table alone.
        Machine,
        /// The VM test with simulated GPUs (what `nix flake check` boots).
        Simulated,
        /// The VM test with GPUs passed through.
        Passthrough,
    }

    /// Arguments of `cdi-harness scenario nixos-eval`.
    #[derive(clap::Args, Debug)]
    pub struct NixosEvalArgs {
        /// Evaluate through this nixpkgs checkout's nixos/lib/eval-config.nix (default:
        /// the flake's pinned nixpkgs when Nix can resolve it, else the kit beside the
        /// repository at ../shared/nixpkgs-eval).
        #[arg(long, value_name = "DIR", conflicts_with = "kit")]
        pub nixpkgs: Option<PathBuf>,
        /// Evaluate through the evaluation kit in DIR (nixpkgs' lib and its Docker and
        /// NVIDIA container toolkit modules; the rest of NixOS is stood in).
        #[arg(long, value_name = "DIR")]
        pub kit: Option<PathBuf>,
        /// How a scenario's machine is assembled; repeat for several.
        #[arg(long = "flavour", value_enum, value_name = "FLAVOUR")]
        pub flavours: Vec<FlavourArg>,
        /// Also evaluate the nightly module (enabled with its defaults, and with every
        /// option set).
        #[arg(long)]
        pub nightly: bool,
        /// Compare each scenario's Docker daemon settings with the daemon.json the sim
        /// backend gives its private engine (features.cdi, runtimes, spec dirs).
        #[arg(long)]
        pub against_sim: bool,
        /// Print JSON (one object per evaluation) instead of text.
        #[arg(long)]
        pub json: bool,
        /// Scenario files (.toml) or directories of them, or NixOS modules (.nix).
        #[arg(value_name = "FILE")]
        pub files: Vec<PathBuf>,
    }

    /// Runs the command; returns its exit code: 0 every configuration evaluates (and
    /// agrees with the sim where asked), 1 nixpkgs rejected one, an assertion fails or
    /// the sim disagrees, 2 usage or setup (no nixpkgs, no Nix, an unreadable file).
    pub fn run(args: NixosEvalArgs) -> u8 {
        match run_inner(&args) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e}");
                2
            }
        }
    }

    fn run_inner(args: &NixosEvalArgs) -> Result<u8, String> {
        if args.files.is_empty() && !args.nightly {
            return Err(
                "nothing to evaluate: give scenario files, .nix modules or --nightly".into(),
            );
        }
        // Scenarios are the harness's first: one it rejects is not evaluated at all.
        let mut modules = Vec::new();
        let mut scenario_paths = Vec::new();
        for f in &args.files {
            if f.extension().is_some_and(|e| e == "nix") {
                if !f.is_file() {
                    return Err(format!("{}: no such file", f.display()));
                }
                modules.push(f.clone());
            } else {
                scenario_paths.push(f.clone());
            }
        }
        let scenarios = if scenario_paths.is_empty() {
            Vec::new()
        } else {
            crate::scenario::load_paths(&scenario_paths)
                .map_err(|e| e.to_string())?
                .0
        };
        let source = match (&args.nixpkgs, &args.kit) {
            (Some(d), _) => Source::Nixpkgs(d.clone()).checked(),
            (None, Some(d)) => Source::Kit(d.clone()).checked(),
            (None, None) => {
                let cwd =
                    std::env::current_dir().map_err(|e| format!("no current directory: {e}"))?;
                Source::default_for(&cwd)
            }
        }
        .map_err(|e| e.to_string())?;
        let evaluator = Evaluator::new(source, None).map_err(|e| e.to_string())?;

        let flavours: Vec<Flavour> = if args.flavours.is_empty() {
            vec![Flavour::Simulated]
        } else {
            args.flavours
                .iter()
                .map(|f| match f {
                    FlavourArg::Machine => Flavour::Machine,
                    FlavourArg::Simulated => Flavour::Simulated,
                    FlavourArg::Passthrough => Flavour::Passthrough,
                })
                .collect()
        };
        let mut jobs: Vec<(Target, Option<&crate::scenario::Scenario>)> = Vec::new();
        for s in &scenarios {
            for f in &flavours {
                jobs.push((
                    Target::Scenario {
                        file: s.path.clone(),
                        flavour: *f,
                    },
                    args.against_sim.then_some(s),
                ));
            }
        }
        jobs.extend(
            modules
                .into_iter()
                .map(|file| (Target::Module { file }, None)),
        );
        if args.nightly {
            jobs.push((Target::Nightly(NightlyVariant::Defaults), None));
            jobs.push((Target::Nightly(NightlyVariant::Full), None));
        }

        let mut code = 0u8;
        let mut json = Vec::new();
        let (mut good, mut bad) = (0usize, 0usize);
        for (target, scenario) in &jobs {
            match evaluator.evaluate(target, *scenario) {
                Ok(ev) => {
                    let ok = ev.ok();
                    if ok {
                        good += 1;
                    } else {
                        bad += 1;
                        code = code.max(1);
                    }
                    if args.json {
                        let mut v = serde_json::to_value(&ev).unwrap_or_default();
                        v["ok"] = ok.into();
                        json.push(v);
                    } else {
                        print!("{}", ev.render());
                        println!("{}\n", if ok { "ok" } else { "FAIL" });
                    }
                }
                Err(e @ NixEvalError::Rejected { .. }) => {
                    bad += 1;
                    code = code.max(1);
                    if args.json {
                        json.push(serde_json::json!({
                            "target": format!("{target}, {}", evaluator.source()),
                            "ok": false,
                            "error": e.to_string(),
                        }));
                    } else {
                        println!("{e}\nFAIL\n");
                    }
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        if args.json {
            match serde_json::to_string_pretty(&json) {
                Ok(t) => println!("{t}"),
                Err(e) => return Err(format!("cannot print JSON: {e}")),
            }
        }
        eprintln!(
            "cdi-harness nixos-eval: {good} of {} configuration(s) evaluate cleanly through {}{}",
            good + bad,
            evaluator.source(),
            if bad > 0 {
                format!("; {bad} FAILED")
            } else {
                String::new()
            }
        );
        Ok(code)
    }
}
