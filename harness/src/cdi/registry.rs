//! Loading CDI spec directories the way the engine does, to predict which device names
//! `docker run --device` can resolve and which spec file serves each one.
//!
//! Reproduced from `pkg/cdi/spec-dirs.go` and `pkg/cdi/cache.go` of the Go library:
//! - each dir is read in list order; a later dir has higher priority;
//! - in a dir, only regular entries named `*.json` or `*.yaml` count (exactly these,
//!   case-sensitive: `.yml` is ignored), in lexical order; subdirectories are skipped;
//! - a missing dir is ignored silently;
//! - a spec dir that is itself a symlink is not read at all: `filepath.Walk` does not
//!   follow a symlinked root (symlinked *files* inside a dir are followed);
//! - a file that fails to parse or validate is skipped, the others still load;
//! - a device defined by two specs of the same priority (same dir) is a conflict: the
//!   engine drops it entirely and reports both files. The drop happens after all dirs
//!   are read, so a conflict in one dir also removes the device that a higher-priority
//!   dir defines;
//! - a device defined in a later dir silently replaces the one of an earlier dir; this
//!   module reports that as [`Notice::Shadowed`], which the engine does not.
//!
//! Which files load depends on the engine's CDI library: [`load_dirs_with`] takes the
//! engine's [`Rules`] (the connected engine's version in the harness's checks), and
//! [`load_dirs`] uses [`Rules::default_engine`].
//!
//! Files are read with [`read_spec_file`]: a FIFO or other non-regular file in a spec
//! dir is reported at once instead of hanging the harness (the engine itself would
//! block reading it).
//!
//! An empty spec file (nothing, whitespace, `null`) is refused like any invalid one:
//! measured on engine 28.5, at startup and when written while it runs, `docker info`
//! reports it ("no Spec data"), as the Go source says.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::CdiError;
use super::check::{Verdict, check_bytes};
use super::rules::Rules;
use super::spec::{Spec, read_spec_file};
use super::validate::{Problem, Report, Severity};

/// A spec file the engine would load, with what it needs to resolve devices.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedSpec {
    /// The file.
    pub path: PathBuf,
    /// Index of its dir in [`Registry::dirs`]: its priority (higher wins).
    pub dir_index: usize,
    /// The parsed spec.
    pub spec: Spec,
    /// Problems the engine tolerates (only [`crate::cdi::Severity::Violation`]s; a
    /// spec with a rejected problem is not loaded at all).
    pub problems: Vec<Problem>,
}

/// Something about the spec dirs a user should know: why a device is missing, or why
/// it comes from another file than expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// The engine skips this file: it does not parse, or fails validation.
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why, naming field paths where validation failed.
        reason: String,
    },
    /// Specs of the same priority define the device, so the engine drops it.
    Conflict {
        /// The qualified device name, e.g. `nvidia.com/gpu=0`.
        device: String,
        /// Every file whose definition of the device is dropped, sorted.
        paths: Vec<PathBuf>,
    },
    /// A later dir's spec silently replaces an earlier dir's definition of the device.
    Shadowed {
        /// The qualified device name.
        device: String,
        /// The file the engine uses.
        winner: PathBuf,
        /// The file whose definition is ignored.
        shadowed: PathBuf,
    },
    /// The engine cannot list this spec dir, so it loads nothing from it.
    DirUnreadable {
        /// The dir.
        dir: PathBuf,
        /// Why.
        reason: String,
    },
    /// A file that looks like a spec but that the engine ignores without a warning
    /// (wrong extension such as `.yml`, empty file, dangling symlink).
    Ignored {
        /// The file.
        path: PathBuf,
        /// Why the engine ignores it.
        reason: String,
    },
}

impl fmt::Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Notice::Invalid { path, reason } => write!(
                f,
                "invalid CDI spec {}: {reason}; the engine skips this file (other spec files still load)",
                path.display()
            ),
            Notice::Conflict { device, paths } => {
                let files: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
                match files.as_slice() {
                    [a, b] => write!(
                        f,
                        "conflicting device {device:?} defined in both {a} and {b}: the engine drops it from both"
                    ),
                    [init @ .., last] if !init.is_empty() => write!(
                        f,
                        "conflicting device {device:?} defined in {} and {last}: the engine drops it from all of them",
                        init.join(", ")
                    ),
                    _ => write!(
                        f,
                        "conflicting device {device:?} in {}: the engine drops it",
                        files.join(", ")
                    ),
                }
            }
            Notice::Shadowed {
                device,
                winner,
                shadowed,
            } => write!(
                f,
                "device {device:?} is defined in both {} and {}: the engine silently uses {} (its spec dir comes later in the list, so it has higher priority)",
                shadowed.display(),
                winner.display(),
                winner.display()
            ),
            Notice::DirUnreadable { dir, reason } => write!(
                f,
                "CDI spec dir {} cannot be read: {reason}; the engine loads no specs from it",
                dir.display()
            ),
            Notice::Ignored { path, reason } => {
                write!(f, "{} is ignored by the engine: {reason}", path.display())
            }
        }
    }
}

/// Everything the engine would load from a list of spec dirs.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Registry {
    /// The spec dirs, lowest priority first (the engine's default is `/etc/cdi`, then
    /// `/var/run/cdi`).
    pub dirs: Vec<PathBuf>,
    /// The specs that load, in load order (dir order, then file name).
    pub specs: Vec<LoadedSpec>,
    /// Qualified device name → the spec file the engine uses for it.
    pub devices: BTreeMap<String, PathBuf>,
    /// Everything worth telling the user, in the order found.
    pub notices: Vec<Notice>,
    /// Dirs that do not exist (the engine ignores them without a word).
    pub missing: Vec<PathBuf>,
    /// The engine rules the files were judged by.
    pub rules: Rules,
    /// The full verdict of each loaded file under [`Registry::rules`]: no errors (it
    /// loaded), its SPEC.md warnings, and notes where another engine would refuse it.
    pub reports: BTreeMap<PathBuf, Report>,
}

impl Registry {
    /// The loaded spec file called `file_name` that the engine would use: the copy in
    /// the highest-priority directory. The generated spec is found by name because its
    /// name (`nvidia-container-toolkit.json`) is what the generator promises.
    pub fn spec_named(&self, file_name: &str) -> Option<&LoadedSpec> {
        self.specs
            .iter()
            .filter(|l| l.path.file_name().is_some_and(|n| n == file_name))
            .max_by_key(|l| l.dir_index)
    }

    /// The dirs that do not exist; no error for the engine, but often the reason
    /// nothing resolves (e.g. a generator writing to `/etc/cdi` when the engine is
    /// configured for another dir).
    pub fn missing_dirs(&self) -> Vec<PathBuf> {
        self.missing.clone()
    }

    /// The spec files that load, in load order.
    pub fn spec_files(&self) -> Vec<PathBuf> {
        self.specs.iter().map(|s| s.path.clone()).collect()
    }

    /// The verdict of a loaded spec file under the registry's rules (its warnings and
    /// notes), as `cdi validate --engine` would print it.
    pub fn report_for(&self, path: &Path) -> Option<&Report> {
        self.reports.get(path)
    }

    /// The spec the engine uses for a qualified device name, if it resolves.
    pub fn spec_for(&self, device: &str) -> Option<&LoadedSpec> {
        let path = self.devices.get(device)?;
        self.specs.iter().find(|s| &s.path == path)
    }
}

/// [`load_dirs_with`] under [`Rules::default_engine`], for callers that do not know
/// the engine.
pub fn load_dirs(dirs: &[PathBuf]) -> Registry {
    load_dirs_with(dirs, &Rules::default_engine())
}

/// Loads every `.json`/`.yaml` spec in the dirs, in dir order (later dir = higher
/// priority), judging each file with `rules` (the engine's CDI library), and resolves
/// devices exactly as the engine does; see the module docs.
pub fn load_dirs_with(dirs: &[PathBuf], rules: &Rules) -> Registry {
    let mut reg = Registry {
        dirs: dirs.to_vec(),
        rules: rules.clone(),
        ..Registry::default()
    };
    for (dir_index, dir) in dirs.iter().enumerate() {
        for path in candidate_files(dir, &mut reg) {
            load_one(&path, dir_index, &mut reg);
        }
    }
    resolve_devices(&mut reg);
    reg
}

/// The files of one dir that the engine tries to load, in its order; records missing
/// and unreadable dirs and ignored look-alike files on the way.
fn candidate_files(dir: &Path, reg: &mut Registry) -> Vec<PathBuf> {
    let meta = match fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            reg.missing.push(dir.to_path_buf());
            return Vec::new();
        }
        Err(e) => {
            reg.notices.push(Notice::DirUnreadable {
                dir: dir.to_path_buf(),
                reason: e.to_string(),
            });
            return Vec::new();
        }
    };
    if meta.file_type().is_symlink() {
        let target =
            fs::read_link(dir).map_or_else(|_| "?".to_owned(), |t| t.display().to_string());
        reg.notices.push(Notice::DirUnreadable {
            dir: dir.to_path_buf(),
            reason: format!(
                "it is a symlink (to {target}), and the engine walks spec dirs with Go's filepath.Walk, which does \
                 not follow a symlinked root; list the target dir itself instead"
            ),
        });
        return Vec::new();
    }
    if !meta.is_dir() {
        // filepath.Walk on a file visits just that file.
        return if has_spec_extension(dir) {
            vec![dir.to_path_buf()]
        } else {
            reg.notices.push(Notice::DirUnreadable {
                dir: dir.to_path_buf(),
                reason: "it is not a directory".to_owned(),
            });
            Vec::new()
        };
    }
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            reg.notices.push(Notice::DirUnreadable {
                dir: dir.to_path_buf(),
                reason: e.to_string(),
            });
            return Vec::new();
        }
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                reg.notices.push(Notice::DirUnreadable {
                    dir: dir.to_path_buf(),
                    reason: format!("listing failed part-way: {e}"),
                });
                continue;
            }
        };
        // Like Walk's lstat: a real subdirectory is skipped, a symlink is not.
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let path = entry.path();
        if has_spec_extension(&path) {
            files.push(path);
        } else if let Some(ext) = path.extension().and_then(|e| e.to_str()).map(str::to_owned)
            && matches!(ext.to_ascii_lowercase().as_str(), "json" | "yaml" | "yml")
        {
            reg.notices.push(Notice::Ignored {
                path,
                reason: format!("the engine only loads *.json and *.yaml (exactly), not *.{ext}; rename the file"),
            });
        }
    }
    // Walk visits names in lexical (byte) order.
    files.sort();
    files
}

/// Whether the engine considers the file a spec (`filepath.Ext` is `.json` or `.yaml`).
fn has_spec_extension(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("json" | "yaml")
    )
}

/// Reads, parses and validates one candidate file into the registry.
fn load_one(path: &Path, dir_index: usize, reg: &mut Registry) {
    let bytes = match read_spec_file(path) {
        Ok(bytes) => bytes,
        Err(CdiError::Read { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            // The engine gets os.ErrNotExist and Docker filters those from its warnings.
            reg.notices.push(Notice::Ignored {
                path: path.to_path_buf(),
                reason: "it is a dangling symlink or vanished while loading".to_owned(),
            });
            return;
        }
        Err(err) => {
            reg.notices.push(Notice::Invalid {
                path: path.to_path_buf(),
                reason: error_reason(&err),
            });
            return;
        }
    };
    let verdict = check_bytes(path, &bytes, &reg.rules);
    match (verdict.verdict, verdict.spec) {
        (Verdict::Loads | Verdict::LoadsWithWarnings, Some(spec)) => {
            let problems = verdict
                .report
                .warnings
                .iter()
                .map(|w| Problem {
                    path: w.path.clone(),
                    message: w.message.clone(),
                    severity: Severity::Violation,
                })
                .collect();
            reg.specs.push(LoadedSpec {
                path: path.to_path_buf(),
                dir_index,
                spec,
                problems,
            });
            reg.reports.insert(path.to_path_buf(), verdict.report);
        }
        _ => {
            let reason = match &verdict.error {
                Some(err) => error_reason(err),
                None => {
                    let reasons: Vec<String> = verdict
                        .report
                        .errors
                        .iter()
                        .map(ToString::to_string)
                        .collect();
                    format!("{} ({})", reasons.join("; "), reg.rules.decider())
                }
            };
            reg.notices.push(Notice::Invalid {
                path: path.to_path_buf(),
                reason,
            });
        }
    }
}

/// The part of a [`CdiError`] message after the file name, since notices print the
/// file themselves.
fn error_reason(err: &CdiError) -> String {
    match err {
        CdiError::Parse { reason, .. } => reason.clone(),
        CdiError::Read { source, .. } => format!("cannot read it: {source}"),
        CdiError::Empty { .. } => {
            "the file holds no spec (\"no Spec data\"); the engine reports it and loads nothing from it"
                .to_owned()
        }
        other => other.to_string(),
    }
}

/// Resolves qualified device names over the loaded specs like `Cache.refresh()`.
fn resolve_devices(reg: &mut Registry) {
    // Current holder of each name: index into `reg.specs`.
    let mut holders: BTreeMap<String, usize> = BTreeMap::new();
    let mut conflicts: BTreeSet<String> = BTreeSet::new();
    let mut shadowed: Vec<(String, usize, usize)> = Vec::new();
    for (idx, loaded) in reg.specs.iter().enumerate() {
        for name in loaded.spec.device_names() {
            match holders.get(&name).copied() {
                None => {
                    holders.insert(name, idx);
                }
                Some(old) => {
                    let old_prio = reg.specs[old].dir_index;
                    if loaded.dir_index > old_prio {
                        shadowed.push((name.clone(), idx, old));
                        holders.insert(name, idx);
                    } else if loaded.dir_index == old_prio {
                        conflicts.insert(name);
                    }
                    // A lower priority than the holder cannot win (a dir listed twice).
                }
            }
        }
    }
    for (name, winner, loser) in shadowed {
        if !conflicts.contains(&name) {
            reg.notices.push(Notice::Shadowed {
                device: name,
                winner: reg.specs[winner].path.clone(),
                shadowed: reg.specs[loser].path.clone(),
            });
        }
    }
    for name in &conflicts {
        let paths: BTreeSet<PathBuf> = reg
            .specs
            .iter()
            .filter(|s| s.spec.device_names().contains(name))
            .map(|s| s.path.clone())
            .collect();
        reg.notices.push(Notice::Conflict {
            device: name.clone(),
            paths: paths.into_iter().collect(),
        });
    }
    reg.devices = holders
        .into_iter()
        .filter(|(name, _)| !conflicts.contains(name))
        .map(|(name, idx)| (name, reg.specs[idx].path.clone()))
        .collect();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use tempfile::TempDir;

    fn fixture_text(name: &str) -> String {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/cdi")
            .join(name);
        fs::read_to_string(path).expect("fixture readable")
    }

    /// A small valid spec defining `kind=<name>` for each name.
    fn spec_json(kind: &str, names: &[&str]) -> String {
        let devices: Vec<String> = names
            .iter()
            .map(|n| format!(r#"{{"name":"{n}","containerEdits":{{"deviceNodes":[{{"path":"/dev/nvidia{n}"}}]}}}}"#))
            .collect();
        format!(
            r#"{{"cdiVersion":"0.5.0","kind":"{kind}","devices":[{}]}}"#,
            devices.join(",")
        )
    }

    fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, body).expect("write fixture");
        path
    }

    fn tmp() -> TempDir {
        tempfile::tempdir().expect("tempdir")
    }

    #[test]
    fn same_dir_conflict_drops_the_device_and_names_both_files() {
        let d = tmp();
        let yaml = write(d.path(), "nvidia.yaml", &fixture_text("nvidia.yaml"));
        let json = write(
            d.path(),
            "nvidia-container-toolkit.json",
            &spec_json("nvidia.com/gpu", &["0", "9"]),
        );
        let reg = load_dirs(&[d.path().to_path_buf()]);

        assert_eq!(
            reg.specs.len(),
            2,
            "both files still load: {:?}",
            reg.notices
        );
        assert!(
            !reg.devices.contains_key("nvidia.com/gpu=0"),
            "{:?}",
            reg.devices
        );
        assert_eq!(reg.devices.get("nvidia.com/gpu=all"), Some(&yaml));
        assert_eq!(reg.devices.get("nvidia.com/gpu=9"), Some(&json));
        assert_eq!(
            reg.notices,
            [Notice::Conflict {
                device: "nvidia.com/gpu=0".into(),
                paths: vec![json.clone(), yaml.clone()],
            }]
        );
        assert_eq!(
            reg.notices[0].to_string(),
            format!(
                "conflicting device \"nvidia.com/gpu=0\" defined in both {} and {}: the engine drops it from both",
                json.display(),
                yaml.display()
            )
        );
    }

    #[test]
    fn later_dir_shadows_earlier_dir_silently_for_the_engine() {
        let (etc, run) = (tmp(), tmp());
        let low = write(
            etc.path(),
            "nvidia.json",
            &spec_json("nvidia.com/gpu", &["0", "1"]),
        );
        let high = write(run.path(), "nvidia.yaml", &fixture_text("nvidia.yaml"));
        let reg = load_dirs(&[etc.path().to_path_buf(), run.path().to_path_buf()]);

        assert_eq!(reg.devices.get("nvidia.com/gpu=0"), Some(&high));
        assert_eq!(reg.devices.get("nvidia.com/gpu=1"), Some(&low));
        assert_eq!(
            reg.notices,
            [Notice::Shadowed {
                device: "nvidia.com/gpu=0".into(),
                winner: high.clone(),
                shadowed: low.clone(),
            }]
        );
        let text = reg.notices[0].to_string();
        assert!(
            text.contains(&low.display().to_string()) && text.contains(&high.display().to_string()),
            "{text}"
        );
        // The reverse order of dirs reverses the winner.
        let reg = load_dirs(&[run.path().to_path_buf(), etc.path().to_path_buf()]);
        assert_eq!(reg.devices.get("nvidia.com/gpu=0"), Some(&low));
    }

    #[test]
    fn conflict_in_a_low_dir_also_removes_the_high_dirs_device() {
        let (etc, run) = (tmp(), tmp());
        let a = write(etc.path(), "a.json", &spec_json("nvidia.com/gpu", &["0"]));
        let b = write(etc.path(), "b.json", &spec_json("nvidia.com/gpu", &["0"]));
        let c = write(run.path(), "c.json", &spec_json("nvidia.com/gpu", &["0"]));
        let reg = load_dirs(&[etc.path().to_path_buf(), run.path().to_path_buf()]);
        assert!(reg.devices.is_empty(), "{:?}", reg.devices);
        let mut all = vec![a, b, c];
        all.sort();
        assert_eq!(
            reg.notices,
            [Notice::Conflict {
                device: "nvidia.com/gpu=0".into(),
                paths: all,
            }]
        );
    }

    #[test]
    fn invalid_file_is_skipped_with_a_notice_while_others_load() {
        let d = tmp();
        let broken = write(
            d.path(),
            "broken.json",
            &fixture_text("broken-invalid.json"),
        );
        let syntax = write(d.path(), "syntax.json", &fixture_text("broken-syntax.json"));
        let good = write(d.path(), "nvidia.json", &fixture_text("nvidia-1gpu.json"));
        let reg = load_dirs(&[d.path().to_path_buf()]);

        assert_eq!(reg.spec_files(), std::slice::from_ref(&good));
        assert_eq!(reg.devices.len(), 3);
        assert!(reg.devices.values().all(|p| p == &good));
        let [
            Notice::Invalid {
                path: p1,
                reason: r1,
            },
            Notice::Invalid {
                path: p2,
                reason: r2,
            },
        ] = reg.notices.as_slice()
        else {
            panic!("expected two Invalid notices, got {:?}", reg.notices);
        };
        assert_eq!((p1, p2), (&broken, &syntax));
        assert!(r1.contains("containerEdits.hooks[0].hookName"), "{r1}");
        assert!(
            !r1.contains("containerEdits.mounts[0].containerPath"),
            "violations are not reasons to skip: {r1}"
        );
        assert!(r2.contains("line"), "{r2}");
        assert!(
            reg.notices[0]
                .to_string()
                .contains("the engine skips this file")
        );
    }

    #[test]
    fn spec_with_only_violations_loads_and_keeps_them() {
        let d = tmp();
        let body = spec_json("nvidia.com/gpu", &["0"]).replace("/dev/nvidia0", "dev/nvidia0");
        let path = write(d.path(), "nvidia.json", &body);
        let reg = load_dirs(&[d.path().to_path_buf()]);
        assert_eq!(reg.devices.get("nvidia.com/gpu=0"), Some(&path));
        let problems: Vec<String> = reg.specs[0]
            .problems
            .iter()
            .map(|p| p.path.clone())
            .collect();
        assert_eq!(problems, ["devices[0].containerEdits.deviceNodes[0].path"]);
        assert!(reg.notices.is_empty(), "{:?}", reg.notices);
    }

    #[test]
    fn empty_file_is_refused_as_engine_28_5_reports_it_and_yml_is_not_loaded() {
        let d = tmp();
        let empty = write(d.path(), "empty.yaml", "  \n");
        let yml = write(d.path(), "nvidia.yml", &fixture_text("nvidia.yaml"));
        write(d.path(), "README.md", "not a spec");
        fs::create_dir(d.path().join("sub.json")).expect("mkdir");
        let reg = load_dirs(&[d.path().to_path_buf()]);

        assert!(reg.specs.is_empty());
        assert!(reg.devices.is_empty());
        let got: Vec<(&str, &PathBuf)> = reg
            .notices
            .iter()
            .map(|n| match n {
                Notice::Ignored { path, .. } => ("ignored", path),
                Notice::Invalid { path, .. } => ("invalid", path),
                other => panic!("unexpected notice {other:?}"),
            })
            .collect();
        assert_eq!(got.len(), 2, "{:?}", reg.notices);
        assert!(
            got.contains(&("invalid", &empty)) && got.contains(&("ignored", &yml)),
            "{got:?}"
        );
        assert!(
            reg.notices
                .iter()
                .any(|n| n.to_string().contains("no Spec data")),
            "{:?}",
            reg.notices
        );
    }

    #[test]
    fn a_fifo_in_a_spec_dir_is_reported_without_blocking() {
        let d = tmp();
        let fifo = d.path().join("pipe.json");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).expect("no NUL");
        // SAFETY: mkfifo with a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        write(d.path(), "nvidia.yaml", &fixture_text("nvidia.yaml"));
        let reg = load_dirs(&[d.path().to_path_buf()]);
        assert_eq!(reg.specs.len(), 1);
        assert!(
            reg.notices
                .iter()
                .any(|n| matches!(n, Notice::Invalid { path, reason } if path == &fifo && reason.contains("FIFO"))),
            "{:?}",
            reg.notices
        );
    }

    #[test]
    fn the_engines_rules_decide_which_files_load() {
        let d = tmp();
        write(
            d.path(),
            "v11.yaml",
            "cdiVersion: 1.1.0\nkind: vendor.com/gpu\ndevices: [{name: x, containerEdits: {env: [A=1]}}]\n",
        );
        let on_28 = load_dirs_with(
            &[d.path().to_path_buf()],
            &Rules::for_engine("28.5").expect("row"),
        );
        assert!(on_28.specs.is_empty(), "{:?}", on_28.notices);
        assert!(
            on_28.notices[0]
                .to_string()
                .contains("engine 28.5's CDI library v1.0.x")
        );
        let on_29 = load_dirs_with(
            &[d.path().to_path_buf()],
            &Rules::for_engine("29.0").expect("row"),
        );
        assert_eq!(
            on_29.devices.keys().collect::<Vec<_>>(),
            ["vendor.com/gpu=x"]
        );
        let report = on_29.report_for(&on_29.specs[0].path).expect("report");
        assert!(
            report
                .notes
                .iter()
                .any(|n| n.message.starts_with("refused by engine 28.5")),
            "{report:?}"
        );
    }

    #[test]
    fn yaml_and_json_load_together_in_lexical_order() {
        let d = tmp();
        let b = write(
            d.path(),
            "b-other.yaml",
            "cdiVersion: 0.6.0\nkind: example.com/fpga\ndevices:\n- name: x\n  containerEdits:\n    env: [A=1]\n",
        );
        let a = write(d.path(), "a-nvidia.json", &fixture_text("nvidia-1gpu.json"));
        let reg = load_dirs(&[d.path().to_path_buf()]);
        assert_eq!(reg.spec_files(), [a.clone(), b.clone()]);
        assert_eq!(reg.devices.get("example.com/fpga=x"), Some(&b));
        assert_eq!(reg.devices.get("nvidia.com/gpu=all"), Some(&a));
        assert_eq!(
            reg.spec_for("example.com/fpga=x").map(|s| s.dir_index),
            Some(0)
        );
        assert!(reg.notices.is_empty(), "{:?}", reg.notices);
    }

    #[test]
    fn missing_dir_is_not_an_error_but_is_visible() {
        let d = tmp();
        write(d.path(), "nvidia.json", &fixture_text("nvidia-1gpu.json"));
        let missing = d.path().join("does-not-exist");
        let reg = load_dirs(&[missing.clone(), d.path().to_path_buf()]);
        assert_eq!(reg.missing_dirs(), [missing]);
        assert!(reg.notices.is_empty(), "{:?}", reg.notices);
        assert_eq!(reg.devices.len(), 3);
    }

    #[test]
    fn symlinked_spec_dir_is_not_walked_but_symlinked_files_are() {
        let (real, links) = (tmp(), tmp());
        let target = write(
            real.path(),
            "nvidia.json",
            &fixture_text("nvidia-1gpu.json"),
        );
        let dir_link = links.path().join("cdi");
        symlink(real.path(), &dir_link).expect("symlink dir");
        let reg = load_dirs(std::slice::from_ref(&dir_link));
        assert!(reg.devices.is_empty());
        assert!(
            matches!(&reg.notices[..], [Notice::DirUnreadable { dir, reason }] if dir == &dir_link && reason.contains("symlink")),
            "{:?}",
            reg.notices
        );

        let file_dir = tmp();
        let file_link = file_dir.path().join("nvidia.json");
        symlink(&target, &file_link).expect("symlink file");
        symlink(
            real.path().join("gone.json"),
            file_dir.path().join("dangling.json"),
        )
        .expect("symlink dangling");
        let reg = load_dirs(&[file_dir.path().to_path_buf()]);
        assert_eq!(reg.spec_files(), [file_link]);
        assert!(
            matches!(&reg.notices[..], [Notice::Ignored { reason, .. }] if reason.contains("dangling")),
            "{:?}",
            reg.notices
        );
    }
}
