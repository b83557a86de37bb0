//! Which CDI library decides whether a spec loads, by engine version.
//!
//! The engine does not validate specs itself: it calls the Go library
//! `tags.cncf.io/container-device-interface` that it vendors, and that library's
//! load-time rules changed between releases (the `cdiVersion`s it knows, the fields of
//! its spec structs, the empty-spec check, a parser crash on one-character vendors). A
//! verdict is therefore only true for one engine; [`Rules`] names the library an
//! engine bundles, and [`ENGINES`] is the table that maps engine versions to it.
//!
//! Where the table comes from: the `vendor.mod` of moby at each release tag, and for
//! the engines CI installs (26.1 from Debian trixie, 28.5 from Debian unstable) a
//! measurement of every corpus spec through the real engine (the test target
//! `cdi_engine_parity`, a step of `.ci/run`),
//! so a row that drifts from what its engine does fails CI.

use std::fmt;
use std::time::Duration;

/// A release line of the Go CDI library whose load-time rules the harness reproduces.
/// Ordered oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Library {
    /// v0.7.x with specs-go v0.7.0 (engines 26.1 and 27.0–27.4): knows `cdiVersion`
    /// 0.1.0–0.7.0, has no "no devices" check, and its parser panics on a
    /// one-character vendor or class.
    V0_7,
    /// v1.0.x with specs-go v1.0.0 (engines 28.1–28.5): knows 0.1.0–1.0.0, refuses a
    /// spec without devices, still panics on a one-character vendor or class.
    V1_0,
    /// v1.1.0 with specs-go v1.1.0 (engine 29): adds `cdiVersion` 1.1.0,
    /// `netDevices`, `intelRdt.schemata`/`enableMonitoring` and drops
    /// `intelRdt.enableCMT`/`enableMBM`; accepts `closID: "/"`.
    V1_1,
    /// The library's main branch after v1.1.0 (no engine bundles it yet): also accepts
    /// `permissions: none` and one-character vendors and classes. The library's own
    /// tests, which the corpus is built from, describe this version.
    Main,
}

impl Library {
    /// Every modelled library, oldest first.
    pub const ALL: [Library; 4] = [Library::V0_7, Library::V1_0, Library::V1_1, Library::Main];

    /// The release as users and `go.mod` files write it.
    pub fn release(self) -> &'static str {
        match self {
            Library::V0_7 => "v0.7.x",
            Library::V1_0 => "v1.0.x",
            Library::V1_1 => "v1.1.0",
            Library::Main => "main (unreleased, after v1.1.0)",
        }
    }

    /// The `cdiVersion` values this library accepts (`validSpecVersions`).
    pub fn known_versions(self) -> &'static [&'static str] {
        const V07: &[&str] = &[
            "0.1.0", "0.2.0", "0.3.0", "0.4.0", "0.5.0", "0.6.0", "0.7.0",
        ];
        const V10: &[&str] = &[
            "0.1.0", "0.2.0", "0.3.0", "0.4.0", "0.5.0", "0.6.0", "0.7.0", "0.8.0", "1.0.0",
        ];
        const V11: &[&str] = &[
            "0.1.0", "0.2.0", "0.3.0", "0.4.0", "0.5.0", "0.6.0", "0.7.0", "0.8.0", "1.0.0",
            "1.1.0",
        ];
        match self {
            Library::V0_7 => V07,
            Library::V1_0 => V10,
            Library::V1_1 | Library::Main => V11,
        }
    }

    /// The newest `cdiVersion` this library knows: what a spec for its engine should say.
    pub fn newest_spec_version(self) -> &'static str {
        self.known_versions().last().copied().unwrap_or("0.3.0")
    }

    /// Whether its spec structs have the 1.1.0 fields (`netDevices`,
    /// `intelRdt.schemata`, `intelRdt.enableMonitoring`) instead of the older
    /// `intelRdt.enableCMT` and `intelRdt.enableMBM`. An unknown field is a parse error
    /// (`UnmarshalStrict`), so this decides which of them a spec may contain at all.
    pub fn has_v1_1_fields(self) -> bool {
        self >= Library::V1_1
    }

    /// Whether a spec without devices is refused ("invalid spec, no devices"): from
    /// v1.0 on; v0.7 loads it (and it defines nothing).
    pub fn requires_devices(self) -> bool {
        self >= Library::V1_0
    }

    /// Whether `validateVendorOrClassName` slices `name[1:len-1]` before checking the
    /// length, which panics for a one-character vendor or class (fixed on main).
    pub fn panics_on_single_char_kind(self) -> bool {
        self < Library::Main
    }

    /// Whether `permissions: none` is accepted (main only).
    pub fn accepts_no_permissions(self) -> bool {
        self >= Library::Main
    }

    /// Whether `intelRdt.closID: "/"` (the root class of service) is accepted (v1.1.0 on).
    pub fn accepts_root_clos_id(self) -> bool {
        self >= Library::V1_1
    }

    /// Whether a device name starting with any non-letter needs `cdiVersion` 0.5.0
    /// (v0.7: `!IsLetter`), rather than only one starting with a digit (v1.0 on). Device
    /// names must start with a letter or digit anyway, so both read the same in practice.
    pub fn digit_rule_is_non_letter(self) -> bool {
        self == Library::V0_7
    }
}

impl fmt::Display for Library {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.release())
    }
}

/// One row of the engine table: an engine release line and the library it vendors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineRow {
    /// The engine's major version.
    pub major: u32,
    /// The lowest minor version of the row.
    pub minor_from: u32,
    /// The highest minor version of the row.
    pub minor_to: u32,
    /// The library the engine vendors (moby's `vendor.mod`).
    pub library: Library,
    /// Whether CI measures this row on a real engine (test `cdi_engine_parity`); the
    /// others rest on the vendored version only.
    pub measured: bool,
}

impl EngineRow {
    /// The row as a version range, e.g. `28.1–28.5`.
    pub fn label(&self) -> String {
        if self.minor_from == self.minor_to {
            format!("{}.{}", self.major, self.minor_from)
        } else {
            format!(
                "{}.{}–{}.{}",
                self.major, self.minor_from, self.major, self.minor_to
            )
        }
    }
}

/// Engine versions and the CDI library each vendors, from moby's `vendor.mod` at the
/// release tags. Engines 25.0, 26.0 (library v0.6.x), 27.5 and 28.0 (v0.8.0) are not
/// modelled: `--engine` refuses them rather than guess.
pub const ENGINES: &[EngineRow] = &[
    EngineRow {
        major: 26,
        minor_from: 1,
        minor_to: 1,
        library: Library::V0_7,
        measured: true,
    },
    EngineRow {
        major: 27,
        minor_from: 0,
        minor_to: 4,
        library: Library::V0_7,
        measured: false,
    },
    EngineRow {
        major: 28,
        minor_from: 1,
        minor_to: 5,
        library: Library::V1_0,
        measured: true,
    },
    EngineRow {
        major: 29,
        minor_from: 0,
        minor_to: u32::MAX,
        library: Library::V1_1,
        measured: false,
    },
];

/// The engine assumed when none is named and none answers: the newest one CI measures.
pub const DEFAULT_ENGINE: (u32, u32) = (28, 5);

/// Why an engine version cannot be mapped to rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RulesError {
    /// The text is not `MAJOR.MINOR[.PATCH]`.
    #[error("engine version {0:?} is not of the form MAJOR.MINOR (e.g. 28.5 or 28.5.2)")]
    BadVersion(String),
    /// The engine has no CDI support at all.
    #[error(
        "engine {0} has no CDI support (CDI arrived in engine 25 behind features.cdi): upgrade the engine to 26.1 or later"
    )]
    NoCdi(String),
    /// The engine vendors a library version the harness does not model.
    #[error(
        "engine {version} is not in the harness's engine table (it knows {known}): pass the nearest listed --engine, or upgrade the engine"
    )]
    Unknown {
        /// The version given.
        version: String,
        /// The rows the table has.
        known: String,
    },
}

impl RulesError {
    /// What the user can do about it.
    pub fn fix_hint(&self) -> &'static str {
        match self {
            RulesError::BadVersion(_) => "pass --engine like 28.5, or leave it out",
            RulesError::NoCdi(_) => "upgrade the engine to 26.1 or later and enable features.cdi",
            RulesError::Unknown { .. } => "pass one of the listed engine versions with --engine",
        }
    }
}

/// Where the engine version behind a [`Rules`] came from, for the output's first line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RulesSource {
    /// `--engine` on the command line.
    Flag,
    /// The engine that answered at this endpoint.
    Connected(String),
    /// No engine named and none answered: the newest measured engine.
    Default,
    /// A library chosen directly (tests, the corpus).
    Library,
}

/// The load-time rules one engine applies to spec files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// The library whose rules apply.
    pub library: Library,
    /// The engine version, when the rules were chosen by engine.
    pub engine: Option<String>,
    /// How they were chosen.
    pub source: RulesSource,
}

impl Rules {
    /// The rules of an engine version such as `28.5`, `28.5.2` or `26.1.5+dfsg1`
    /// (`docker version`'s server version), through [`ENGINES`].
    pub fn for_engine(version: &str) -> Result<Rules, RulesError> {
        let (major, minor) = parse_engine_version(version)
            .ok_or_else(|| RulesError::BadVersion(version.to_owned()))?;
        if major < 25 {
            return Err(RulesError::NoCdi(version.to_owned()));
        }
        let row = ENGINES
            .iter()
            .find(|r| r.major == major && (r.minor_from..=r.minor_to).contains(&minor))
            .ok_or_else(|| RulesError::Unknown {
                version: version.to_owned(),
                known: ENGINES
                    .iter()
                    .map(EngineRow::label)
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        Ok(Rules {
            library: row.library,
            engine: Some(format!("{major}.{minor}")),
            source: RulesSource::Flag,
        })
    }

    /// The rules for the engine the harness is connected to, from its
    /// `docker version`/`docker info` server version: [`Rules::for_engine`] when the
    /// table has it, else [`Rules::default_engine`] (an engine the table does not
    /// model is judged like the newest measured one rather than not at all). This is
    /// what the harness's own checks and spec-dir loading use.
    pub fn for_connected_engine(server_version: &str, endpoint: &str) -> Rules {
        match Rules::for_engine(server_version) {
            Ok(mut rules) => {
                rules.source = RulesSource::Connected(endpoint.to_owned());
                rules
            }
            Err(_) => Rules::default_engine(),
        }
    }

    /// The rules of a library version with no engine attached.
    pub fn for_library(library: Library) -> Rules {
        Rules {
            library,
            engine: None,
            source: RulesSource::Library,
        }
    }

    /// The rules of [`DEFAULT_ENGINE`]: what the harness assumes without an engine.
    pub fn default_engine() -> Rules {
        let (major, minor) = DEFAULT_ENGINE;
        Rules {
            library: Library::V1_0,
            engine: Some(format!("{major}.{minor}")),
            source: RulesSource::Default,
        }
    }

    /// Who decides, in words: `engine 28.5's CDI library v1.0.x`.
    pub fn decider(&self) -> String {
        match &self.engine {
            Some(e) => format!("engine {e}'s CDI library {}", self.library),
            None => format!("CDI library {}", self.library),
        }
    }

    /// The first output line of `cdi validate`: which rules and why.
    pub fn describe(&self) -> String {
        let why = match &self.source {
            RulesSource::Flag => "from --engine".to_owned(),
            RulesSource::Connected(at) => format!("the engine at {at}"),
            RulesSource::Default => {
                "no engine answered at DOCKER_HOST: the newest engine CI measures; pass --engine to choose"
                    .to_owned()
            }
            RulesSource::Library => "chosen directly".to_owned(),
        };
        format!("rules: {} ({why})", self.decider())
    }
}

/// The other deciders a note may compare with: each modelled engine row once, newest
/// library last, plus the library's main branch.
pub fn other_deciders(current: &Rules) -> Vec<Rules> {
    let mut out: Vec<Rules> = Vec::new();
    for row in ENGINES {
        if row.library == current.library {
            continue;
        }
        if out.iter().any(|r| r.library == row.library) {
            continue;
        }
        let minor = if row.minor_to == u32::MAX {
            row.minor_from
        } else {
            row.minor_to
        };
        out.push(Rules {
            library: row.library,
            engine: Some(format!("{}.{}", row.major, minor)),
            source: RulesSource::Library,
        });
    }
    if current.library != Library::Main {
        out.push(Rules::for_library(Library::Main));
    }
    out
}

impl Default for Rules {
    /// [`Rules::default_engine`].
    fn default() -> Self {
        Rules::default_engine()
    }
}

/// `MAJOR.MINOR` of an engine version string; tolerates a patch level and suffixes
/// (`28.5.2+dfsg3`, `v26.1.5`).
pub fn parse_engine_version(v: &str) -> Option<(u32, u32)> {
    let v = v.trim().trim_start_matches('v');
    let mut parts = v.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The server version of the engine at `uri` (`unix://…` or `tcp://…`), or `None` when
/// it does not answer within `timeout`: `cdi validate` must not hang on a dead socket.
pub async fn engine_version_at(uri: &str, timeout: Duration) -> Option<String> {
    let secs = timeout.as_secs().max(1);
    let docker = if uri.starts_with("unix://") {
        bollard::Docker::connect_with_socket(uri, secs, bollard::API_DEFAULT_VERSION)
    } else {
        bollard::Docker::connect_with_http(uri, secs, bollard::API_DEFAULT_VERSION)
    }
    .ok()?;
    let version = tokio::time::timeout(timeout, docker.version())
        .await
        .ok()?
        .ok()?;
    version.version
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measured_engines_map_to_their_vendored_library() {
        assert_eq!(
            Rules::for_engine("26.1.5").map(|r| r.library),
            Ok(Library::V0_7)
        );
        assert_eq!(
            Rules::for_engine("28.5.2+dfsg3").map(|r| r.library),
            Ok(Library::V1_0)
        );
        assert_eq!(
            Rules::for_engine("29.1").map(|r| r.library),
            Ok(Library::V1_1)
        );
    }

    #[test]
    fn unmodelled_and_cdi_less_engines_are_refused_with_a_reason() {
        assert!(matches!(
            Rules::for_engine("20.10"),
            Err(RulesError::NoCdi(_))
        ));
        assert!(matches!(
            Rules::for_engine("28.0.1"),
            Err(RulesError::Unknown { .. })
        ));
        assert!(matches!(
            Rules::for_engine("new"),
            Err(RulesError::BadVersion(_))
        ));
    }

    #[test]
    fn connected_engines_fall_back_to_the_default_when_not_in_the_table() {
        let r = Rules::for_connected_engine("26.1.5+dfsg1", "unix:///run/docker.sock");
        assert_eq!(r.library, Library::V0_7);
        assert_eq!(
            r.source,
            RulesSource::Connected("unix:///run/docker.sock".to_owned())
        );
        assert_eq!(
            Rules::for_connected_engine("28.0.4", "x"),
            Rules::default_engine()
        );
    }

    #[test]
    fn deciders_name_engine_and_library() {
        let r = Rules::for_engine("28.5").expect("in the table");
        assert_eq!(r.decider(), "engine 28.5's CDI library v1.0.x");
        let others: Vec<String> = other_deciders(&r).iter().map(Rules::decider).collect();
        assert_eq!(
            others,
            [
                "engine 26.1's CDI library v0.7.x",
                "engine 29.0's CDI library v1.1.0",
                "CDI library main (unreleased, after v1.1.0)"
            ]
        );
    }
}
