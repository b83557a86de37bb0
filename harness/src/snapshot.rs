//! The spec snapshot check, through insta: the normalized spec is compared with
//! `snapshots/<backend>/<scenario>.snap`, so a nightly run notices when the generated
//! spec changes structure, and `cargo insta review` is how a user accepts a change.

use std::panic::AssertUnwindSafe;
use std::path::Path;

use crate::outcome::BackendKind;
use crate::outcome::Verdict;

/// Installs a panic hook that keeps insta's failed-assertion panics (which the snapshot
/// check catches and turns into a verdict) off the terminal, and leaves every other
/// panic to the default hook. Call once, before checks run.
pub fn quiet_insta_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let text = info
                .payload()
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| info.payload().downcast_ref::<&str>().copied())
                .unwrap_or("");
            if text.starts_with("snapshot assertion") {
                return;
            }
            default(info);
        }));
    });
}

/// Compares `value` with the stored snapshot of `scenario` for `backend` in `dir`.
/// A new or changed snapshot fails the check; outside CI insta writes a `.snap.new`
/// beside it for `cargo insta review` (or `cargo insta accept`).
pub fn check(
    dir: &Path,
    backend: BackendKind,
    scenario: &str,
    value: &serde_json::Value,
) -> Verdict {
    let snap_dir = dir.join(backend.as_str());
    let file = snap_dir.join(format!("{scenario}.snap"));
    let old = std::fs::read_to_string(&file).ok();
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(&snap_dir);
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    settings.set_description(format!(
        "normalized CDI spec of scenario `{scenario}` on the {} backend (cdi-harness cdi normalize)",
        backend.as_str()
    ));
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
        settings.bind(|| insta::assert_json_snapshot!(scenario, value));
    }));
    match (result, old) {
        (Ok(()), _) => Verdict::pass(format!("normalized spec matches {}", file.display())),
        (Err(_), None) => Verdict::fail(
            format!("no stored snapshot {} yet", file.display()),
            Some("review the new snapshot with `cargo insta review` (or run with INSTA_UPDATE=always) and commit it".into()),
        ),
        (Err(_), Some(old)) => {
            let new = serde_json::to_string_pretty(value).unwrap_or_default();
            let old_body = snapshot_body(&old);
            Verdict::fail(
                format!(
                    "the normalized spec differs from {}:\n{}",
                    file.display(),
                    compact_diff(old_body, &new)
                ),
                Some("if the change is intended (a new toolkit or driver layout), accept it with `cargo insta review` and commit the snapshot".into()),
            )
        }
    }
}

/// The body of an insta `.snap` file: everything after its YAML header.
fn snapshot_body(text: &str) -> &str {
    let Some(rest) = text.strip_prefix("---\n") else {
        return text;
    };
    match rest.find("\n---\n") {
        Some(i) => &rest[i + 5..],
        None => rest,
    }
}

/// A unified diff limited to a readable size.
fn compact_diff(old: &str, new: &str) -> String {
    let diff = similar::TextDiff::from_lines(old.trim_end(), new.trim_end());
    let text = diff
        .unified_diff()
        .context_radius(2)
        .header("stored", "now")
        .to_string();
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() > 40 {
        format!(
            "{}\n… ({} more diff lines)",
            lines[..40].join("\n"),
            lines.len() - 40
        )
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Status;

    #[test]
    fn new_then_matching_then_changed() {
        quiet_insta_panics();
        let dir = tempfile::tempdir().expect("tempdir");
        let v1 = serde_json::json!({"kind": "nvidia.com/gpu", "devices": ["0", "all"]});
        // No snapshot yet: fails, names the file.
        let first = check(dir.path(), BackendKind::Sim, "t", &v1);
        assert_eq!(first.status, Status::Fail);
        assert!(first.message.contains("no stored snapshot"));
        // Store it as `cargo insta accept` would, then it matches.
        let body = serde_json::to_string_pretty(&v1).expect("json");
        std::fs::create_dir_all(dir.path().join("sim")).expect("mkdir");
        std::fs::write(
            dir.path().join("sim/t.snap"),
            format!("---\nsource: x\n---\n{body}\n"),
        )
        .expect("write");
        let _ = std::fs::remove_file(dir.path().join("sim/t.snap.new"));
        assert_eq!(
            check(dir.path(), BackendKind::Sim, "t", &v1).status,
            Status::Pass
        );
        // A structural change fails with a diff naming the changed line.
        let v2 = serde_json::json!({"kind": "nvidia.com/gpu", "devices": ["0", "1", "all"]});
        let changed = check(dir.path(), BackendKind::Sim, "t", &v2);
        assert_eq!(changed.status, Status::Fail);
        assert!(
            changed.message.contains("+    \"1\","),
            "{}",
            changed.message
        );
    }
}
