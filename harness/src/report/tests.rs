use std::collections::BTreeMap;

use super::*;
use crate::outcome::{BackendKind, EngineFacts};

fn check(
    scenario: &str,
    check: &str,
    status: Status,
    message: &str,
    fix: Option<&str>,
    millis: u64,
) -> CheckResult {
    CheckResult {
        scenario: scenario.to_owned(),
        check: check.to_owned(),
        status,
        message: message.to_owned(),
        fix: fix.map(str::to_owned),
        cause: None,
        evidence: Some(crate::outcome::Evidence::Measured),
        duration: Duration::from_millis(millis),
        backend: BackendKind::Sim,
        simulated: true,
    }
}

#[test]
fn a_short_failure_without_fix_is_printed_once_and_a_long_one_in_full() {
    let mut r = sample();
    r.results = vec![
        check("seed", "a", Status::Fail, "short reason", None, 1),
        check(
            "seed",
            "b",
            Status::Fail,
            &"long reason ".repeat(20),
            None,
            1,
        ),
    ];
    let table = summary_table(&r, 100, false);
    assert_eq!(table.matches("short reason").count(), 1, "{table}");
    assert!(!table.contains("fix:"), "{table}");
    // The long one is cut in its row, so it follows in full.
    assert!(
        table.contains(&"long reason ".repeat(20).trim_end().to_string()),
        "{table}"
    );
}

/// A small fixed report: two scenarios, every status, a multi-line failure with a fix.
fn sample() -> RunReport {
    let mut engines = BTreeMap::new();
    engines.insert(
        "seed".to_owned(),
        EngineFacts {
            version: Some("28.5.2".to_owned()),
            api_version: Some("1.51".to_owned()),
            endpoint: Some("unix:///run/cdi-harness/seed/docker.sock".to_owned()),
            ..EngineFacts::default()
        },
    );
    RunReport {
        schema_version: REPORT_SCHEMA_VERSION,
        backend: BackendKind::Sim,
        simulated: true,
        started_at: "2025-01-02T03:04:05Z".to_owned(),
        duration: Duration::from_millis(3420),
        engines,
        flake_inputs: None,
        specs: BTreeMap::new(),
        interrupted: false,
        results: vec![
            check(
                "seed",
                "device_all",
                Status::Pass,
                "saw 2 GPUs in the container",
                None,
                210,
            ),
            check(
                "seed",
                "device_index",
                Status::Fail,
                "expected /dev/nvidia1 in the container, found none\ncontainer output:\n  ls: /dev/nvidia1: No such file",
                Some(
                    "regenerate the CDI spec: nvidia-ctk cdi generate --output=/var/run/cdi/nvidia.yaml",
                ),
                1234,
            ),
            check(
                "legacy",
                "runtime_flag",
                Status::Skip,
                "the nvidia runtime is not installed | legacy path",
                None,
                0,
            ),
        ],
    }
}

fn host_report() -> RunReport {
    let mut r = sample();
    r.backend = BackendKind::Host;
    r.simulated = false;
    for c in &mut r.results {
        c.backend = BackendKind::Host;
        c.simulated = false;
    }
    r
}

fn dir_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

// ---- JSON ----

#[test]
fn json_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.json");
    let report = sample();
    write_json(&report, &path).unwrap();
    let back = read_json(&path).unwrap();
    assert_eq!(back, report);
    assert_eq!(dir_entries(dir.path()), vec!["run.json"]);
}

#[test]
fn write_json_creates_missing_directories() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out/nested/run.json");
    write_json(&sample(), &path).unwrap();
    assert_eq!(read_json(&path).unwrap(), sample());
}

#[test]
fn read_json_on_corrupt_file_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.json");
    fs::write(
        &path,
        b"{\"schema_version\": 1, \"backend\": \"sim\", \"resu",
    )
    .unwrap();
    let err = read_json(&path).unwrap_err();
    assert!(matches!(err, ReportError::Parse { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("regenerate"), "{msg}");
}

#[test]
fn read_json_on_empty_file_is_a_parse_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.json");
    fs::write(&path, b"").unwrap();
    let err = read_json(&path).unwrap_err();
    assert!(matches!(err, ReportError::Parse { .. }), "{err:?}");
}

#[test]
fn read_json_on_missing_file_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.json");
    let err = read_json(&path).unwrap_err();
    assert!(matches!(err, ReportError::Read { .. }), "{err:?}");
    assert!(err.to_string().contains(&path.display().to_string()));
}

#[test]
fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("future.json");
    let newer = u64::from(REPORT_SCHEMA_VERSION) + 1;
    // A future layout: fields renamed, so a plain parse would fail confusingly.
    let text = format!(r#"{{"schema_version": {newer}, "verdicts": []}}"#);
    fs::write(&path, text).unwrap();
    let err = read_json(&path).unwrap_err();
    match &err {
        ReportError::NewerSchema {
            found, supported, ..
        } => {
            assert_eq!(*found, newer);
            assert_eq!(*supported, REPORT_SCHEMA_VERSION);
        }
        other => panic!("expected NewerSchema, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains(&format!("version {newer}")), "{msg}");
    assert!(msg.contains("newer cdi-harness"), "{msg}");
}

#[test]
fn newer_schema_with_otherwise_valid_layout_is_still_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("future.json");
    let mut report = sample();
    report.schema_version = REPORT_SCHEMA_VERSION + 1;
    fs::write(&path, serde_json::to_vec(&report).unwrap()).unwrap();
    assert!(matches!(
        read_json(&path),
        Err(ReportError::NewerSchema { .. })
    ));
}

// ---- atomic writing ----

#[test]
fn overwrite_replaces_completely_and_leaves_no_temp_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.json");
    // An old file much longer than the new report: any leftover tail would show.
    fs::write(&path, "x".repeat(100_000)).unwrap();
    let mut report = sample();
    report.results.truncate(1);
    write_json(&report, &path).unwrap();
    let text = fs::read_to_string(&path).unwrap();
    assert!(!text.contains("xxxxxxxxxx"));
    assert_eq!(read_json(&path).unwrap(), report);
    assert_eq!(dir_entries(dir.path()), vec!["run.json"]);
}

#[test]
fn interrupted_write_leaves_old_file_intact_and_no_temp_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.json");
    fs::write(&path, "old report").unwrap();
    let err = write_atomically(&path, |w| {
        w.write_all(b"{\"half\": ")?;
        w.flush()?;
        Err(io::Error::other("interrupted"))
    })
    .unwrap_err();
    assert!(
        matches!(
            err,
            ReportError::Write {
                step: "writing",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains(&path.display().to_string()));
    assert_eq!(fs::read_to_string(&path).unwrap(), "old report");
    assert_eq!(dir_entries(dir.path()), vec!["run.json"]);
}

#[test]
fn failed_rename_leaves_no_temp_file() {
    let dir = tempfile::tempdir().unwrap();
    // The target is a non-empty directory, so the final rename must fail.
    let path = dir.path().join("report.xml");
    fs::create_dir(&path).unwrap();
    fs::write(path.join("keep"), "kept").unwrap();
    let err = write_junit(&sample(), &path).unwrap_err();
    assert!(
        matches!(
            err,
            ReportError::Write {
                step: "replacing the old file",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(dir_entries(dir.path()), vec!["report.xml"]);
    assert_eq!(fs::read_to_string(path.join("keep")).unwrap(), "kept");
}

#[cfg(unix)]
#[test]
fn written_report_is_readable_by_others() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.json");
    write_json(&sample(), &path).unwrap();
    let mode = fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o644);
}

// ---- JUnit ----

#[test]
fn junit_has_failure_skip_counts_and_simulated_marker() {
    let xml = junit_string(&sample()).unwrap();
    assert!(
        xml.contains(r#"<testsuites name="cdi-harness [simulated]" tests="3" skipped="1" failures="1" errors="0""#),
        "{xml}"
    );
    assert!(
        xml.contains(
            r#"<testsuite name="seed [simulated]" tests="2" skipped="0" errors="0" failures="1""#
        ),
        "{xml}"
    );
    assert!(
        xml.contains(
            r#"<testsuite name="legacy [simulated]" tests="1" skipped="1" errors="0" failures="0""#
        ),
        "{xml}"
    );
    assert!(
        xml.contains(r#"<testcase name="device_index" classname="seed""#),
        "{xml}"
    );
    assert!(
        xml.contains(r#"<failure message="expected /dev/nvidia1 in the container, found none" type="check failed">"#),
        "{xml}"
    );
    assert!(
        xml.contains("fix: regenerate the CDI spec: nvidia-ctk cdi generate"),
        "{xml}"
    );
    assert!(
        xml.contains(r#"<skipped message="the nvidia runtime is not installed | legacy path"/>"#),
        "{xml}"
    );
    assert!(
        xml.contains(r#"<property name="simulated" value="true"/>"#),
        "{xml}"
    );
    assert!(!xml.contains(r#"value="false""#), "{xml}");
}

#[test]
fn junit_parses_back_with_the_same_structure() {
    let xml = junit_string(&sample()).unwrap();
    let parsed = quick_junit::Report::deserialize_from_str(&xml).unwrap();
    assert_eq!((parsed.tests, parsed.failures, parsed.skipped), (3, 1, 1));
    let names: Vec<&str> = parsed.test_suites.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["seed [simulated]", "legacy [simulated]"]);
    let seed = &parsed.test_suites[0];
    let case = &seed.test_cases[1];
    assert_eq!(case.name.as_str(), "device_index");
    assert_eq!(case.classname.as_deref(), Some("seed"));
    match &case.status {
        TestCaseStatus::NonSuccess {
            kind: NonSuccessKind::Failure,
            message,
            description,
            ..
        } => {
            assert_eq!(
                message.as_deref(),
                Some("expected /dev/nvidia1 in the container, found none")
            );
            let description = description.as_deref().unwrap();
            assert!(description.contains("ls: /dev/nvidia1: No such file"));
            assert!(description.contains("fix: regenerate the CDI spec"));
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    assert!(matches!(
        parsed.test_suites[1].test_cases[0].status,
        TestCaseStatus::Skipped { .. }
    ));
}

#[test]
fn junit_for_host_has_no_simulated_marker() {
    let xml = junit_string(&host_report()).unwrap();
    assert!(!xml.contains(SIMULATED_MARKER), "{xml}");
    assert!(xml.contains(r#"<testsuite name="seed" "#), "{xml}");
    assert!(
        xml.contains(r#"<property name="simulated" value="false"/>"#),
        "{xml}"
    );
    assert!(
        xml.contains(r#"<property name="backend" value="host"/>"#),
        "{xml}"
    );
}

#[test]
fn one_simulated_result_marks_its_suite() {
    let mut report = host_report();
    report.results[0].simulated = true;
    let xml = junit_string(&report).unwrap();
    assert!(
        xml.contains(r#"<testsuite name="seed [simulated]""#),
        "{xml}"
    );
    assert!(xml.contains(r#"<testsuite name="legacy" "#), "{xml}");
}

#[test]
fn write_junit_writes_the_same_xml() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("junit.xml");
    fs::write(&path, "<old/>".repeat(10_000)).unwrap();
    write_junit(&sample(), &path).unwrap();
    assert_eq!(
        fs::read_to_string(&path).unwrap(),
        junit_string(&sample()).unwrap()
    );
    assert_eq!(dir_entries(dir.path()), vec!["junit.xml"]);
}

// ---- terminal ----

#[test]
fn table_lists_every_check_and_totals() {
    let table = summary_table(&sample(), 120, false);
    for name in ["device_all", "device_index", "runtime_flag"] {
        assert!(table.contains(name), "{table}");
    }
    let last = table.lines().last().unwrap();
    assert_eq!(
        last,
        "1 passed, 1 failed, 1 skipped (simulated: sim backend)"
    );
    let host = summary_table(&host_report(), 120, false);
    assert_eq!(
        host.lines().last().unwrap(),
        "1 passed, 1 failed, 1 skipped (host backend)"
    );
}

#[test]
fn table_truncates_long_messages_to_width() {
    let mut report = sample();
    report.results[0].message = "m".repeat(500);
    for width in [60, 80, 100] {
        let table = summary_table(&report, width, false);
        let row = table.lines().find(|l| l.contains("device_all")).unwrap();
        assert_eq!(row.chars().count(), width, "{row}");
        assert!(row.ends_with('…'), "{row}");
        for line in table.lines().take(4) {
            assert!(line.chars().count() <= width, "{line:?} wider than {width}");
        }
    }
    // Short messages are not touched.
    let table = summary_table(&sample(), 200, false);
    assert!(table.contains("saw 2 GPUs in the container\n"), "{table}");
}

#[test]
fn table_shows_full_failure_message_and_fix() {
    let table = summary_table(&sample(), 60, false);
    let lines: Vec<&str> = table.lines().collect();
    let row = lines
        .iter()
        .position(|l| l.contains("device_index"))
        .unwrap();
    assert!(lines[row].contains("FAIL"));
    assert_eq!(
        lines[row + 1],
        "    expected /dev/nvidia1 in the container, found none"
    );
    assert_eq!(lines[row + 2], "    container output:");
    assert_eq!(lines[row + 3], "      ls: /dev/nvidia1: No such file");
    assert_eq!(
        lines[row + 4],
        "    fix: regenerate the CDI spec: nvidia-ctk cdi generate --output=/var/run/cdi/nvidia.yaml"
    );
    // The passing and skipped checks get no details.
    assert!(!table.contains("    saw 2 GPUs"));
}

#[test]
fn table_colors_statuses_only_when_asked() {
    let plain = summary_table(&sample(), 100, false);
    assert!(!plain.contains('\x1b'));
    let colored = summary_table(&sample(), 100, true);
    assert!(colored.contains(&format!("{GREEN}PASS{GREEN:#}")));
    assert!(colored.contains(&format!("{RED}FAIL{RED:#}")));
    assert!(colored.contains(&format!("{YELLOW}SKIP{YELLOW:#}")));
    // Colour codes must not shift the columns.
    let strip = |s: &str| {
        s.replace(&GREEN.render().to_string(), "")
            .replace(&RED.render().to_string(), "")
            .replace(&YELLOW.render().to_string(), "")
            .replace(&GREEN.render_reset().to_string(), "")
    };
    assert_eq!(strip(&colored), plain);
}

#[test]
fn messages_cannot_inject_control_characters() {
    let mut report = sample();
    report.results[0].message = "ok\x1b[2J\ttabbed".to_owned();
    let table = summary_table(&report, 120, false);
    assert!(!table.contains('\x1b'));
    assert!(table.contains("ok[2J tabbed"), "{table}");
}

#[test]
fn progress_lines() {
    let report = sample();
    assert_eq!(
        progress_line(&report.results[0], false),
        "  PASS  seed::device_all (0.21s)"
    );
    assert_eq!(
        progress_line(&report.results[1], false),
        "  FAIL  seed::device_index (1.23s) — expected /dev/nvidia1 in the container, found none"
    );
    assert_eq!(
        progress_line(&report.results[2], false),
        "  SKIP  legacy::runtime_flag (0.00s) — the nvidia runtime is not installed | legacy path"
    );
    assert_eq!(
        progress_line(&report.results[1], true),
        format!(
            "  {RED}FAIL{RED:#}  seed::device_index (1.23s) — expected /dev/nvidia1 in the container, found none"
        )
    );
}

#[test]
fn durations_format_compactly() {
    assert_eq!(format_duration(Duration::from_millis(210)), "0.21s");
    assert_eq!(format_duration(Duration::from_millis(12_345)), "12.3s");
    assert_eq!(format_duration(Duration::from_secs(125)), "2m05s");
}

#[test]
fn truncate_counts_chars_not_bytes() {
    assert_eq!(truncate("héllo wörld", 5), "héll…");
    assert_eq!(truncate("short", 5), "short");
    assert_eq!(truncate("abc", 0), "");
}

#[test]
fn empty_report_renders() {
    let mut report = sample();
    report.results.clear();
    report.engines.clear();
    let table = summary_table(&report, 80, false);
    assert!(table.ends_with("0 passed, 0 failed, 0 skipped (simulated: sim backend)\n"));
    assert!(markdown(&report).contains("No checks ran."));
    let xml = junit_string(&report).unwrap();
    assert!(xml.contains(r#"tests="0""#), "{xml}");
}

// ---- Markdown ----

#[test]
fn markdown_escapes_pipes_and_labels_simulation() {
    let md = markdown(&sample());
    assert!(md.starts_with("# cdi-harness report: sim backend (simulated)\n"));
    assert!(md.contains("not installed \\| legacy path"), "{md}");
    let host = markdown(&host_report());
    assert!(!host.contains("imulated"), "{host}");
}

#[test]
fn fence_outgrows_backticks_in_content() {
    assert_eq!(fenced("a ```` b"), "`````text\na ```` b\n`````\n");
    assert_eq!(fenced("plain"), "```text\nplain\n```\n");
}

#[test]
fn snapshot_markdown() {
    insta::assert_snapshot!(markdown(&sample()));
}

#[test]
fn snapshot_table() {
    insta::assert_snapshot!(summary_table(&sample(), 100, false));
}
