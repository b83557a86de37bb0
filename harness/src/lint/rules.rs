//! The pitfalls themselves: each rule reads the file's option definitions (see
//! [`super::defs`]) or its syntax tree and says where a pitfall is written.
//!
//! Option names and defaults follow nixpkgs' `nixos/modules/services/hardware/
//! nvidia-container-toolkit/default.nix` and `nixos/modules/virtualisation/docker.nix`.

use rnix::ast::{self, AstToken};
use rnix::{SyntaxKind, SyntaxNode, TextRange, TextSize};
use rowan::ast::AstNode;

use super::defs::{self, Def};
use super::{Pitfall, Severity};

/// A finding before it has a file and a line: the rule, where, and what to say.
pub(crate) struct Raw {
    pub(crate) pitfall: Pitfall,
    pub(crate) severity: Severity,
    pub(crate) at: TextSize,
    pub(crate) problem: String,
    pub(crate) fix: String,
}

const TOOLKIT_ENABLE: &[&str] = &["hardware", "nvidia-container-toolkit", "enable"];
const SUPPRESS: &[&str] = &[
    "hardware",
    "nvidia-container-toolkit",
    "suppressNvidiaDriverAssertion",
];
/// The toolkit option's old name, still accepted through `mkRenamedOptionModule`.
const RENAMED_TOOLKIT_ENABLE: &[&str] = &[
    "virtualisation",
    "containers",
    "cdi",
    "dynamic",
    "nvidia",
    "enable",
];
const DOCKER_ENABLE: &[&str] = &["virtualisation", "docker", "enable"];
const ROOTLESS_ENABLE: &[&str] = &["virtualisation", "docker", "rootless", "enable"];
const DOCKER_ENABLE_NVIDIA: &[&str] = &["virtualisation", "docker", "enableNvidia"];
const PODMAN_ENABLE_NVIDIA: &[&str] = &["virtualisation", "podman", "enableNvidia"];
/// The daemon settings of the rootful engine and of the rootless one (both become a
/// `daemon.json`; the toolkit module sets `features.cdi` in both).
const SETTINGS: &[&[&str]] = &[
    &["virtualisation", "docker", "daemon", "settings"],
    &["virtualisation", "docker", "rootless", "daemon", "settings"],
];
const PACKAGES: &[&[&str]] = &[
    &["virtualisation", "docker", "package"],
    &["virtualisation", "docker", "rootless", "package"],
];
const VIDEO_DRIVERS: &[&str] = &["services", "xserver", "videoDrivers"];
const DATACENTER: &[&str] = &["hardware", "nvidia", "datacenter", "enable"];

const TOOLKIT_FIX: &str = "rely solely on `hardware.nvidia-container-toolkit.enable = true`";

/// Every rule over one parsed file.
pub(crate) fn check(root: &ast::Root, defs: &[Def]) -> Vec<Raw> {
    let mut out = Vec::new();
    manual_runtimes(defs, &mut out);
    nvidia_docker(root.syntax(), &mut out);
    deprecated_enable_nvidia(defs, &mut out);
    docker_without_toolkit(defs, &mut out);
    cdi_off(defs, &mut out);
    default_runtime(defs, &mut out);
    no_driver(defs, &mut out);
    gpus_flag(root.syntax(), &mut out);
    out
}

fn mentions_nvidia(text: &str) -> bool {
    text.to_ascii_lowercase().contains("nvidia")
}

fn start(range: TextRange) -> TextSize {
    range.start()
}

/// Pitfall 1: A runtime under `daemon.settings.runtimes` whose name or value mentions NVIDIA.
fn manual_runtimes(defs: &[Def], out: &mut Vec<Raw>) {
    for settings in SETTINGS {
        let runtimes: Vec<&str> = settings.iter().copied().chain(["runtimes"]).collect();
        let depth = runtimes.len();
        // One finding per runtime, at the first place its name is written.
        let mut reported: Vec<String> = Vec::new();
        for def in defs.iter().filter(|d| d.starts_with(&runtimes)) {
            let (path, at, nvidia) = if def.segs.len() == depth {
                // `runtimes = someExpression;`: only its text can tell.
                if matches!(def.value, ast::Expr::AttrSet(_)) {
                    continue;
                }
                let text = def.value.syntax().text().to_string();
                (def.dotted(depth), def.key_range(), mentions_nvidia(&text))
            } else {
                let seg = &def.segs[depth];
                let same_runtime = |d: &&Def| {
                    d.starts_with(&runtimes)
                        && d.segs.len() > depth
                        && d.segs[depth].name == seg.name
                        && (seg.name.is_some() || d.segs[depth].range == seg.range)
                };
                let nvidia = seg.name.as_deref().is_some_and(mentions_nvidia)
                    || defs
                        .iter()
                        .filter(same_runtime)
                        .any(|d| mentions_nvidia(&d.value.syntax().text().to_string()));
                (def.dotted(depth + 1), seg.range, nvidia)
            };
            if !nvidia || reported.contains(&path) {
                continue;
            }
            reported.push(path.clone());
            out.push(Raw {
                pitfall: Pitfall::ManualRuntime,
                severity: Severity::Error,
                at: start(at),
                problem: format!(
                    "`{path}`: manual NVIDIA runtime, breaks after `nix flake update`"
                ),
                fix: format!("remove it and {TOOLKIT_FIX}"),
            });
        }
    }
}

/// Pitfall 2: Any reference to `nvidia-docker`: `pkgs.nvidia-docker`, `nvidia-docker` under
/// `with pkgs;`, `inherit (pkgs) nvidia-docker;`.
fn nvidia_docker(root: &SyntaxNode, out: &mut Vec<Raw>) {
    const NAME: &str = "nvidia-docker";
    for node in root.descendants() {
        let hit = match node.kind() {
            SyntaxKind::NODE_SELECT => ast::Select::cast(node.clone())
                .and_then(|s| s.attrpath())
                .is_some_and(|p| {
                    p.attrs()
                        .any(|a| defs::attr_name(&a).as_deref() == Some(NAME))
                }),
            SyntaxKind::NODE_IDENT if node.text() == NAME => {
                // Names of bindings, of selected attributes (reported with their select),
                // `?` tests and function parameters are not references of their own.
                !matches!(
                    node.parent().map(|p| p.kind()),
                    Some(
                        SyntaxKind::NODE_ATTRPATH
                            | SyntaxKind::NODE_PAT_ENTRY
                            | SyntaxKind::NODE_IDENT_PARAM
                            | SyntaxKind::NODE_PAT_BIND
                    )
                )
            }
            _ => false,
        };
        if hit {
            let text = node.text().to_string();
            let shown = if text.len() > 60 {
                NAME.to_string()
            } else {
                text
            };
            out.push(Raw {
                pitfall: Pitfall::NvidiaDocker,
                severity: Severity::Error,
                at: node.text_range().start(),
                problem: format!(
                    "`{shown}`: the legacy nvidia-docker wrapper and runtime, breaks after `nix flake update`"
                ),
                fix: format!("remove it and {TOOLKIT_FIX}"),
            });
        }
    }
}

/// Pitfall 3: The deprecated switches: `virtualisation.docker.enableNvidia`,
/// `virtualisation.podman.enableNvidia`, and the toolkit option's old name.
fn deprecated_enable_nvidia(defs: &[Def], out: &mut Vec<Raw>) {
    for def in defs.iter().filter(|d| defs::is_true(&d.value)) {
        let problem = if def.is(DOCKER_ENABLE_NVIDIA) {
            "`virtualisation.docker.enableNvidia = true` is deprecated: it registers the legacy `nvidia` runtime as Docker's default-runtime (nixpkgs warns for docker >= 25)"
        } else if def.is(PODMAN_ENABLE_NVIDIA) {
            "`virtualisation.podman.enableNvidia = true` is deprecated and has no effect (nixpkgs warns it will be removed)"
        } else if def.is(RENAMED_TOOLKIT_ENABLE) {
            "`virtualisation.containers.cdi.dynamic.nvidia.enable` was renamed to `hardware.nvidia-container-toolkit.enable` (nixpkgs warns)"
        } else {
            continue;
        };
        out.push(Raw {
            pitfall: Pitfall::EnableNvidia,
            severity: Severity::Error,
            at: start(def.key_range()),
            problem: problem.to_string(),
            fix: "use `hardware.nvidia-container-toolkit.enable = true` instead".to_string(),
        });
    }
}

/// Whether the file switches the toolkit on, or may (`enable = someCondition;`).
fn toolkit_maybe_enabled(defs: &[Def]) -> bool {
    defs.iter().any(|d| {
        (d.is(TOOLKIT_ENABLE) || d.is(RENAMED_TOOLKIT_ENABLE)) && !defs::is_false(&d.value)
    })
}

/// Pitfall 4: Docker switched on in a file that does not switch the toolkit on.
fn docker_without_toolkit(defs: &[Def], out: &mut Vec<Raw>) {
    let Some(docker) = defs
        .iter()
        .find(|d| (d.is(DOCKER_ENABLE) || d.is(ROOTLESS_ENABLE)) && defs::is_true(&d.value))
    else {
        return;
    };
    // nixpkgs turns the toolkit on (mkDefault) for `virtualisation.docker.enableNvidia`,
    // and rule 3 already says to replace that with the toolkit option.
    let enable_nvidia = defs
        .iter()
        .any(|d| d.is(DOCKER_ENABLE_NVIDIA) && defs::is_true(&d.value));
    if toolkit_maybe_enabled(defs) || enable_nvidia {
        return;
    }
    out.push(Raw {
        pitfall: Pitfall::DockerWithoutToolkit,
        severity: Severity::Error,
        at: start(docker.key_range()),
        problem: format!(
            "`{} = true` without `hardware.nvidia-container-toolkit.enable = true` in this file: no CDI spec is generated, so containers get no GPU",
            docker.dotted(docker.segs.len())
        ),
        fix: "add `hardware.nvidia-container-toolkit.enable = true;`".to_string(),
    });
}

/// The Docker major version a package expression names (`pkgs.docker_24` → 24,
/// `docker_20_10` → 20), if it names one.
fn docker_major(expr: &ast::Expr) -> Option<u32> {
    let names = expr.syntax().descendants_with_tokens().filter_map(|e| {
        e.into_token()
            .filter(|t| t.kind() == SyntaxKind::TOKEN_IDENT)
            .map(|t| t.text().to_string())
    });
    for name in names {
        if let Some(version) = name.strip_prefix("docker_") {
            let major = version.split('_').next().unwrap_or_default();
            if let Ok(major) = major.parse::<u32>() {
                return Some(major);
            }
        }
    }
    None
}

/// Pitfall 5: CDI switched off: `features.cdi = false`, or a Docker older than 25 (the toolkit
/// module only turns CDI on for docker >= 25; nixpkgs#305312).
fn cdi_off(defs: &[Def], out: &mut Vec<Raw>) {
    for settings in SETTINGS {
        let cdi: Vec<&str> = settings
            .iter()
            .copied()
            .chain(["features", "cdi"])
            .collect();
        for def in defs
            .iter()
            .filter(|d| d.is(&cdi) && defs::is_false(&d.value))
        {
            out.push(Raw {
                pitfall: Pitfall::CdiOff,
                severity: Severity::Error,
                at: start(def.key_range()),
                problem: format!(
                    "`{} = false` turns CDI off: `--device nvidia.com/gpu=all` fails with could not select device driver \"cdi\" (nixpkgs#305312)",
                    def.dotted(def.segs.len())
                ),
                fix: "remove it; `hardware.nvidia-container-toolkit.enable = true` sets `features.cdi = true` for docker >= 25".to_string(),
            });
        }
    }
    for package in PACKAGES {
        for def in defs.iter().filter(|d| d.is(package)) {
            let Some(major) = docker_major(&def.value).filter(|m| *m < 25) else {
                continue;
            };
            out.push(Raw {
                pitfall: Pitfall::CdiOff,
                severity: Severity::Error,
                at: start(def.key_range()),
                problem: format!(
                    "`{} = {}`: Docker {major} predates CDI, so the toolkit module leaves `features.cdi` off (it sets it for docker >= 25; nixpkgs#305312)",
                    def.dotted(def.segs.len()),
                    def.value.syntax().text()
                ),
                fix: "use the default `pkgs.docker` or `docker_25` and newer (nixpkgs removed docker_24 in 2024-12)".to_string(),
            });
        }
    }
}

/// Pitfall 6: `default-runtime = "nvidia"` in the daemon settings.
fn default_runtime(defs: &[Def], out: &mut Vec<Raw>) {
    for settings in SETTINGS {
        let key: Vec<&str> = settings
            .iter()
            .copied()
            .chain(["default-runtime"])
            .collect();
        for def in defs.iter().filter(|d| d.is(&key)) {
            let ast::Expr::Str(s) = &def.value else {
                continue;
            };
            let Some(value) = defs::static_str(s).filter(|v| mentions_nvidia(v)) else {
                continue;
            };
            out.push(Raw {
                pitfall: Pitfall::DefaultRuntime,
                severity: Severity::Error,
                at: start(def.key_range()),
                problem: format!(
                    "`{} = \"{value}\"`: every container goes through the legacy NVIDIA runtime instead of CDI",
                    def.dotted(def.segs.len())
                ),
                fix: "remove default-runtime; CDI needs no runtime (`docker run --device nvidia.com/gpu=all`)".to_string(),
            });
        }
    }
}

/// Whether the file is where this machine's NVIDIA driver, or the whole machine, is
/// configured: then a driver missing from it is very likely missing from the machine.
/// A fragment such as the seed's `machines/docker.nix` is neither.
fn holds_driver_or_machine(defs: &[Def]) -> bool {
    defs.iter().any(|d| {
        d.starts_with(&["hardware", "nvidia"])
            || d.is(VIDEO_DRIVERS)
            || d.is(&["system", "stateVersion"])
            || d.starts_with(&["fileSystems"])
            || d.starts_with(&["boot", "loader"])
    })
}

/// Pitfall 7: The toolkit switched on without a driver its module's assertion accepts:
/// `hardware.nvidia.datacenter.enable`, `"nvidia"` in `services.xserver.videoDrivers`,
/// or `hardware.nvidia-container-toolkit.suppressNvidiaDriverAssertion`.
fn no_driver(defs: &[Def], out: &mut Vec<Raw>) {
    let Some(toolkit) = defs
        .iter()
        .find(|d| d.is(TOOLKIT_ENABLE) && defs::is_true(&d.value))
    else {
        return;
    };
    let not_false = |path: &[&str]| defs.iter().any(|d| d.is(path) && !defs::is_false(&d.value));
    let nvidia_driver = defs
        .iter()
        .filter(|d| d.is(VIDEO_DRIVERS))
        .any(|d| defs::string_literals(&d.value).any(|s| s == "nvidia"));
    if not_false(SUPPRESS) || not_false(DATACENTER) || nvidia_driver {
        return;
    }
    if !holds_driver_or_machine(defs) {
        return;
    }
    let package_only = defs
        .iter()
        .any(|d| d.is(&["hardware", "nvidia", "package"]));
    out.push(Raw {
        pitfall: Pitfall::NoDriver,
        severity: Severity::Warning,
        at: start(toolkit.key_range()),
        problem: format!(
            "`hardware.nvidia-container-toolkit.enable = true` but this file configures no NVIDIA driver the toolkit module accepts (\"nvidia\" in `services.xserver.videoDrivers`, or `hardware.nvidia.datacenter.enable`){}: its assertion fails the build unless another file of this machine configures the driver",
            if package_only {
                "; `hardware.nvidia.package` alone does not count"
            } else {
                ""
            }
        ),
        fix: "add `services.xserver.videoDrivers = [ \"nvidia\" ];` (or `hardware.nvidia.datacenter.enable = true;`), or set `hardware.nvidia-container-toolkit.suppressNvidiaDriverAssertion = true` when the driver comes from elsewhere (WSL)".to_string(),
    });
}

/// Pitfall 8: `--gpus` in any string: scripts, `ExecStart`, `extraOptions`, `''…''` blocks.
fn gpus_flag(root: &SyntaxNode, out: &mut Vec<Raw>) {
    const FLAG: &str = "--gpus";
    let contents = root
        .descendants_with_tokens()
        .filter_map(|e| e.into_token())
        .filter_map(ast::StrContent::cast);
    for content in contents {
        let token = content.syntax();
        let text = token.text();
        let base = token.text_range().start();
        let mut from = 0;
        while let Some(found) = text[from..].find(FLAG) {
            let at = from + found;
            from = at + FLAG.len();
            let before = text[..at].chars().next_back();
            let after = text[from..].chars().next();
            let word =
                |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '-' || c == '_');
            if word(before) || word(after) {
                continue;
            }
            let Ok(offset) = u32::try_from(at) else {
                continue;
            };
            out.push(Raw {
                pitfall: Pitfall::GpusFlag,
                severity: Severity::Error,
                at: base + TextSize::from(offset),
                problem: "`--gpus` asks Docker for the legacy NVIDIA runtime, which a CDI machine lacks: could not select device driver \"\" with capabilities: [[gpu]]".to_string(),
                fix: "use `--device nvidia.com/gpu=all` (or `nvidia.com/gpu=N` for one GPU)".to_string(),
            });
        }
    }
}
