//! `cdi-harness bench`: is the harness at least as fast as the hand-run checklist?
//!
//! Both sides run against the same engine: a private simulated engine laid out as the
//! `seed` scenario describes. The baseline is `scripts/seed-checklist.sh`, the seed
//! write-up's manual steps (ls the spec dir, `docker info | grep -i cdi`, the
//! `--device` run, the `--gpus` run). The harness side is `cdi-harness run --backend host`
//! on the seed scenario pointed at that engine through `DOCKER_HOST`, as a user would
//! run it on a GPU host, so process start-up is counted on both sides. Runs alternate
//! so drift on the machine hurts both equally; medians are compared.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::engine::Timeouts;
use crate::runner;
use crate::scenario::Scenario;

/// The baseline script, embedded so the benchmark runs from any directory.
pub const CHECKLIST: &str = include_str!("../../scripts/seed-checklist.sh");

/// Why the benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The private engine did not start.
    #[error("cannot start the private engine for the benchmark: {0}")]
    Engine(String),
    /// A side of the benchmark failed: its timing would be meaningless.
    #[error("{side} failed (exit {code:?}), so its time means nothing:\n{output}")]
    SideFailed {
        /// `checklist` or `harness`.
        side: &'static str,
        /// Exit status.
        code: Option<i32>,
        /// What it printed.
        output: String,
    },
    /// Files or processes could not be set up.
    #[error("{0}")]
    Io(String),
}

/// What was measured.
#[derive(Debug, Clone)]
pub struct BenchResult {
    /// Wall times of the checklist script.
    pub checklist: Vec<Duration>,
    /// Wall times of `cdi-harness run` doing the checklist's work: the
    /// [`CHECKLIST_EQUIVALENTS`] only (`--filter`). The ratio is taken on these.
    pub harness: Vec<Duration>,
    /// Wall times of `cdi-harness run` on the whole seed scenario.
    pub whole: Vec<Duration>,
    /// Checks each whole run compared (passed or failed; the script makes 4).
    pub harness_checks: usize,
    /// Checks each whole run skipped (they need the driver, which a private engine on
    /// this machine does not have): not counted as work done.
    pub harness_skipped: usize,
}

/// The checks that do what the checklist's four steps do: each must pass in the
/// harness's warm-up run, or the two sides would not be doing the same work.
const CHECKLIST_EQUIVALENTS: [&str; 4] =
    ["spec_present", "info_devices", "device_all", "gpus_flag"];

/// The median of a non-empty sample (zero for an empty one).
pub fn median(samples: &[Duration]) -> Duration {
    let mut v = samples.to_vec();
    v.sort();
    match v.len() {
        0 => Duration::ZERO,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2,
    }
}

impl BenchResult {
    /// harness median / checklist median: at or below 1.0 is the target.
    pub fn ratio(&self) -> f64 {
        let c = median(&self.checklist).as_secs_f64();
        if c == 0.0 {
            return f64::INFINITY;
        }
        median(&self.harness).as_secs_f64() / c
    }

    /// A readable report.
    pub fn render(&self) -> String {
        let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1000.0);
        let range = |v: &[Duration]| {
            let min = v.iter().min().copied().unwrap_or_default();
            let max = v.iter().max().copied().unwrap_or_default();
            format!("{} – {}", ms(min), ms(max))
        };
        let ratio = self.ratio();
        let row = |label: String, v: &[Duration]| {
            format!("{label:<56} {:>7}   range {}\n", ms(median(v)), range(v))
        };
        format!(
            "seed scenario, same private engine, {} runs each (alternating)\n{}{}{}\
             ratio harness/checklist on the same {} checks: {ratio:.2} ({})\n",
            self.checklist.len(),
            row("checklist script (4 steps)".into(), &self.checklist),
            row(
                format!(
                    "cdi-harness run, the same {} checks",
                    CHECKLIST_EQUIVALENTS.len()
                ),
                &self.harness
            ),
            row(
                format!(
                    "cdi-harness run, whole scenario ({} checks, {} skipped)",
                    self.harness_checks, self.harness_skipped
                ),
                &self.whole
            ),
            CHECKLIST_EQUIVALENTS.len(),
            if ratio <= 1.0 {
                "at or ahead of the script"
            } else {
                "slower than the script: investigate before landing"
            }
        )
    }
}

/// Runs the benchmark: `iterations` runs of each side against one private engine.
pub async fn run(
    seed: &Scenario,
    seed_file: &Path,
    harness_bin: &Path,
    dockerd: Option<PathBuf>,
    iterations: usize,
) -> Result<BenchResult, BenchError> {
    let mut env = runner::start_sim(seed, dockerd, Timeouts::default())
        .await
        .map_err(BenchError::Engine)?;
    let result = measure(seed, seed_file, harness_bin, &env, iterations).await;
    env.stop().await;
    result
}

async fn measure(
    seed: &Scenario,
    seed_file: &Path,
    harness_bin: &Path,
    env: &runner::SimEnvironment,
    iterations: usize,
) -> Result<BenchResult, BenchError> {
    let work = tempfile::tempdir()
        .map_err(|e| BenchError::Io(format!("cannot create a temporary directory: {e}")))?;
    let script = work.path().join("seed-checklist.sh");
    std::fs::write(&script, CHECKLIST)
        .map_err(|e| BenchError::Io(format!("cannot write {}: {e}", script.display())))?;
    let snapshots = work.path().join("snapshots");
    // Every harness run writes its report here, and each is checked: a run that
    // skipped the work would otherwise be timed as if it had done it.
    let run_report = work.path().join("run.json");
    // The harness checks the engine as `host`, where `count = "auto"` would ask a
    // driver this machine may not have: the copy says how many GPUs the private
    // engine was given.
    let seed_copy = work.path().join(
        seed_file
            .file_name()
            .unwrap_or_else(|| std::ffi::OsStr::new("seed.toml")),
    );
    std::fs::write(&seed_copy, with_gpu_count(seed_file, seed.gpus.count)?)
        .map_err(|e| BenchError::Io(format!("cannot write {}: {e}", seed_copy.display())))?;
    let docker_host = env.engine.docker_host();
    let spec_dir = env.generated_spec_dir().to_path_buf();

    let checklist_cmd = || {
        let mut c = tokio::process::Command::new("bash");
        c.arg(&script)
            .env("DOCKER_HOST", &docker_host)
            .env("SPEC_DIR", &spec_dir)
            .env("IMAGE", runner::SIM_IMAGE)
            .kill_on_drop(true);
        c
    };
    let harness_cmd = |update: bool, same_work: bool| {
        let mut c = tokio::process::Command::new(harness_bin);
        c.args([
            "run",
            "--backend",
            "host",
            "--quiet",
            "--image",
            runner::SIM_IMAGE,
            "--scenario",
        ])
        .arg(&seed_copy)
        .arg("--snapshots")
        .arg(&snapshots)
        .env("DOCKER_HOST", &docker_host)
        // The warm-up records `.snap.new` (outside CI); timed runs write nothing.
        .env("CI", if update { "false" } else { "true" })
        .arg("--json")
        .arg(&run_report)
        .kill_on_drop(true);
        if same_work {
            for check in CHECKLIST_EQUIVALENTS {
                c.arg("--filter").arg(format!("{}::{check}", seed.name));
            }
        }
        c
    };

    // Warm-up: both sides once (image cache, first container), and the harness records
    // the host snapshot of this engine's spec so timed runs compare against it.
    timed("checklist", checklist_cmd()).await?;
    let (_, warm_up) = timed_output(harness_cmd(true, false)).await?;
    crate::snapshot::accept_pending(&snapshots, crate::outcome::BackendKind::Host, &seed.name)
        .map_err(|e| {
            BenchError::Io(format!(
                "the harness's warm-up run recorded no snapshot of the seed's spec ({e}); it exited {} saying: {}",
                warm_up.status,
                crate::sim::last_lines(
                    &format!(
                        "{}{}",
                        String::from_utf8_lossy(&warm_up.stdout),
                        String::from_utf8_lossy(&warm_up.stderr)
                    ),
                    8
                )
                .replace('\n', " / ")
            ))
        })?;
    let (compared, skipped) = compared_work(&run_report)?;
    // Each timed run must have done what the warm-up did: the four checks passed, and
    // the whole scenario as many checks compared.
    let timed_harness = async |same_work: bool| -> Result<Duration, BenchError> {
        let took = timed("harness", harness_cmd(false, same_work)).await?;
        let did = compared_work(&run_report)?;
        let expected = if same_work {
            (CHECKLIST_EQUIVALENTS.len(), 0)
        } else {
            (compared, skipped)
        };
        if did != expected {
            return Err(BenchError::Io(format!(
                "a timed harness run compared {} checks and skipped {} where {} and {} were expected: its time would not be for the same work",
                did.0, did.1, expected.0, expected.1
            )));
        }
        Ok(took)
    };
    timed_harness(true).await?;

    let mut result = BenchResult {
        checklist: Vec::new(),
        harness: Vec::new(),
        whole: Vec::new(),
        harness_checks: compared,
        harness_skipped: skipped,
    };
    for _ in 0..iterations.max(1) {
        result
            .checklist
            .push(timed("checklist", checklist_cmd()).await?);
        result.harness.push(timed_harness(true).await?);
        result.whole.push(timed_harness(false).await?);
    }
    Ok(result)
}

/// The seed scenario's text with `[gpus] count` set to `count`.
fn with_gpu_count(seed_file: &Path, count: u32) -> Result<String, BenchError> {
    let text = std::fs::read_to_string(seed_file)
        .map_err(|e| BenchError::Io(format!("cannot read {}: {e}", seed_file.display())))?;
    let mut table: toml::Table = text
        .parse()
        .map_err(|e| BenchError::Io(format!("cannot parse {}: {e}", seed_file.display())))?;
    let gpus = table
        .entry("gpus")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let toml::Value::Table(gpus) = gpus {
        gpus.insert("count".into(), toml::Value::Integer(i64::from(count)));
    }
    toml::to_string(&table)
        .map_err(|e| BenchError::Io(format!("cannot write the seed scenario back: {e}")))
}

/// How many checks the warm-up run compared and skipped; an error unless each of the
/// checklist's equivalents passed (else the harness would be timed doing less work).
fn compared_work(report: &Path) -> Result<(usize, usize), BenchError> {
    use crate::outcome::Status;
    let report = crate::report::read_json(report)
        .map_err(|e| BenchError::Io(format!("the harness's warm-up report: {e}")))?;
    for check in CHECKLIST_EQUIVALENTS {
        let found = report.results.iter().find(|r| r.check == check);
        if found.is_none_or(|r| r.status != Status::Pass) {
            return Err(BenchError::Io(format!(
                "the harness's warm-up run did not pass `{check}` ({}), which the checklist's steps also check: its time would not be for the same work",
                found.map_or_else(
                    || "no result".to_string(),
                    |r| format!("{}: {}", r.status.as_str(), r.message)
                )
            )));
        }
    }
    let skipped = report.count(Status::Skip);
    Ok((report.results.len() - skipped, skipped))
}

async fn timed_output(
    mut cmd: tokio::process::Command,
) -> Result<(Duration, std::process::Output), BenchError> {
    let t = Instant::now();
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .map_err(|_| BenchError::Io("a benchmark run took over 120 s".into()))?
        .map_err(|e| BenchError::Io(format!("cannot run {cmd:?}: {e}")))?;
    Ok((t.elapsed(), out))
}

async fn timed(side: &'static str, cmd: tokio::process::Command) -> Result<Duration, BenchError> {
    let (took, out) = timed_output(cmd).await?;
    if !out.status.success() {
        return Err(BenchError::SideFailed {
            side,
            code: out.status.code(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        });
    }
    Ok(took)
}

/// Targets for the full `sim` suite on the 2-core reference machine (issue #13): every
/// check still run.
pub const SUITE_WALL_TARGET: Duration = Duration::from_secs(6);
/// Peak resident memory of the harness process itself (its engines not counted).
pub const SUITE_RSS_TARGET_KIB: u64 = 50 * 1024;

/// One run of the whole `sim` suite, as `cdi-harness run --backend sim` runs it.
#[derive(Debug, Clone)]
pub struct SuiteMeasure {
    /// Wall time of the whole run, process start to exit.
    pub wall: Duration,
    /// The harness process's peak resident set (`VmHWM`), sampled until it exited.
    pub peak_rss_kib: u64,
    /// Its exit code (0: no check failed).
    pub exit_code: Option<i32>,
    /// Checks its report holds, and how many of them skipped (`None`: no readable
    /// report): a suite that skipped its work is not fast, only idle.
    pub checks: Option<(usize, usize)>,
}

impl SuiteMeasure {
    /// A readable line, against the targets.
    pub fn render(&self) -> String {
        let wall_ok = self.wall <= SUITE_WALL_TARGET;
        let rss_ok = self.peak_rss_kib < SUITE_RSS_TARGET_KIB;
        format!(
            "full sim suite{}: {:.1} s wall ({} the {} s target), harness peak RSS {:.0} MB ({} the {} MB target){}\n",
            match self.checks {
                Some((all, skipped)) => format!(" ({all} checks, {skipped} skipped)"),
                None => " (no report: what it checked is unknown)".to_string(),
            },
            self.wall.as_secs_f64(),
            if wall_ok { "within" } else { "over" },
            SUITE_WALL_TARGET.as_secs(),
            self.peak_rss_kib as f64 / 1024.0,
            if rss_ok { "within" } else { "over" },
            SUITE_RSS_TARGET_KIB / 1024,
            match self.exit_code {
                Some(0) => String::new(),
                other => format!(
                    "; the suite exited {other:?}: a failing suite's time is not comparable"
                ),
            }
        )
    }
}

/// Runs the whole suite in `scenarios` once on `sim` and measures its wall time and the
/// harness's peak RSS. The peak is the kernel's high-water mark (`VmHWM` in
/// `/proc/<pid>/status`, read with procfs), sampled every 20 ms: it only grows, so the
/// last sample before exit is the peak up to then.
pub async fn suite(
    harness_bin: &Path,
    scenarios: &Path,
    dockerd: Option<&Path>,
) -> Result<SuiteMeasure, BenchError> {
    let work = tempfile::tempdir()
        .map_err(|e| BenchError::Io(format!("cannot create a temporary directory: {e}")))?;
    let mut cmd = tokio::process::Command::new(harness_bin);
    cmd.args(["run", "--backend", "sim", "--quiet", "--scenario"])
        .arg(scenarios)
        .arg("--json")
        .arg(work.path().join("suite.json"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    if let Some(d) = dockerd {
        cmd.arg("--dockerd").arg(d);
    }
    let t = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| BenchError::Io(format!("cannot run {}: {e}", harness_bin.display())))?;
    let pid = child.id().map(|p| p as i32);
    let mut peak = 0u64;
    let status = loop {
        if let Some(pid) = pid {
            if let Some(hwm) = procfs::process::Process::new(pid)
                .and_then(|p| p.status())
                .ok()
                .and_then(|s| s.vmhwm)
            {
                peak = peak.max(hwm);
            }
        }
        tokio::select! {
            s = child.wait() => break s,
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    };
    let wall = t.elapsed();
    let status = status.map_err(|e| BenchError::Io(format!("waiting for the suite: {e}")))?;
    let checks = crate::report::read_json(&work.path().join("suite.json"))
        .ok()
        .map(|r| (r.results.len(), r.count(crate::outcome::Status::Skip)));
    Ok(SuiteMeasure {
        wall,
        peak_rss_kib: peak,
        exit_code: status.code(),
        checks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suite_line_says_where_it_stands_against_the_targets() {
        let fast = SuiteMeasure {
            wall: Duration::from_millis(5400),
            peak_rss_kib: 40 * 1024,
            exit_code: Some(0),
            checks: Some((183, 19)),
        };
        let line = fast.render();
        assert!(line.contains("(183 checks, 19 skipped)"), "{line}");
        assert!(
            line.contains("5.4 s wall (within the 6 s target)"),
            "{line}"
        );
        assert!(
            line.contains("peak RSS 40 MB (within the 50 MB target)"),
            "{line}"
        );
        let slow = SuiteMeasure {
            wall: Duration::from_secs(11),
            peak_rss_kib: 80 * 1024,
            exit_code: Some(1),
            checks: None,
        };
        let line = slow.render();
        assert!(line.contains("what it checked is unknown"), "{line}");
        assert!(
            line.contains("over the 6 s target") && line.contains("over the 50 MB target"),
            "{line}"
        );
        assert!(line.contains("not comparable"), "{line}");
    }

    #[test]
    fn median_of_odd_and_even_samples() {
        let ms = Duration::from_millis;
        assert_eq!(median(&[ms(30), ms(10), ms(20)]), ms(20));
        assert_eq!(median(&[ms(40), ms(10), ms(20), ms(30)]), ms(25));
        assert_eq!(median(&[]), Duration::ZERO);
    }

    #[test]
    fn ratio_and_verdict() {
        let ms = Duration::from_millis;
        let r = BenchResult {
            checklist: vec![ms(800)],
            harness: vec![ms(400)],
            whole: vec![ms(900)],
            harness_checks: 17,
            harness_skipped: 3,
        };
        assert!((r.ratio() - 0.5).abs() < 1e-9);
        let text = r.render();
        assert!(text.contains("at or ahead"), "{text}");
        assert!(
            text.contains("whole scenario (17 checks, 3 skipped)"),
            "{text}"
        );
        assert!(text.contains("on the same 4 checks: 0.50"), "{text}");
        let slow = BenchResult {
            harness: vec![ms(1600)],
            ..r
        };
        assert!(slow.render().contains("slower"));
    }

    #[test]
    fn checklist_checks_the_seed_steps() {
        for step in [
            "ls -la",
            "docker info 2>&1 | grep -i cdi",
            "--device nvidia.com/gpu=all",
            "--gpus all",
        ] {
            assert!(CHECKLIST.contains(step), "checklist lacks {step}");
        }
    }
}
