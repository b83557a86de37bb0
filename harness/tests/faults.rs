//! Fault injection: the built `cdi-harness` binary under signals, dying and hung
//! engines and hostile input, the way an operator or a CI runner meets them. Each case
//! asserts the exit code, the message, and that nothing is left: containers, processes,
//! temp dirs, mounts.
//!
//! The cheap cases (closed stdout, hostile scenario files, sockets that refuse, never
//! answer or hang up, a hung fake engine, missing report directories) need no engine
//! and run anywhere. The rest need root and a CDI-capable dockerd
//! (`.ci/install-engine`), like the `sim` backend; where one is missing they fail and
//! say why, unless `CDI_HARNESS_ALLOW_SKIP=1` (then they print `skipped: <why>`).
//!
//! The engine cases run one at a time (every `sim` run sweeps what dead runs left, so
//! two at once would sweep each other's evidence) and share one private engine where
//! the case allows; each is bounded in time.

use std::io::{Read as _, Write as _};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cdi_harness::engine::{OWNER_LABEL, Timeouts};
use cdi_harness::sim::{find_dockerd, find_static_busybox};

const BIN: &str = env!("CARGO_BIN_EXE_cdi-harness");

/// The repository root (scenarios/, snapshots/).
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate is in the repository")
        .to_path_buf()
}

/// Engine cases one at a time (see the module doc).
static ENGINES: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn engines_lock() -> std::sync::MutexGuard<'static, ()> {
    ENGINES.lock().unwrap_or_else(|e| e.into_inner())
}

/// The start of a case that runs private engines: `None` when it cannot run here (the
/// cannot-run rule decides), else the lock that keeps such cases apart and a scratch
/// directory.
fn engine_case() -> Option<(std::sync::MutexGuard<'static, ()>, tempfile::TempDir)> {
    if cannot_run(engine_skip_reason()) {
        return None;
    }
    Some((engines_lock(), tempfile::tempdir().expect("tempdir")))
}

/// A test that cannot run here fails with the reason, unless the user opted out with
/// `CDI_HARNESS_ALLOW_SKIP=1`. Returns true when the test should stop.
fn cannot_run(reason: Option<String>) -> bool {
    let Some(reason) = reason else {
        return false;
    };
    if std::env::var_os("CDI_HARNESS_ALLOW_SKIP").is_some_and(|v| v == "1") {
        eprintln!("skipped: {reason}");
        return true;
    }
    panic!(
        "cannot run this fault test here: {reason} (set CDI_HARNESS_ALLOW_SKIP=1 to skip knowingly)"
    );
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

/// Why the engine cases cannot run here, if they cannot.
fn engine_skip_reason() -> Option<String> {
    if euid() != 0 {
        return Some("the private engine needs root".into());
    }
    if let Err(e) = find_dockerd(None) {
        return Some(e.to_string());
    }
    if let Err(e) = find_static_busybox() {
        return Some(e.to_string());
    }
    None
}

/// One run of the binary: its own TMPDIR (where the sim's spec dirs go) and output
/// files under `work`, named `name`.
struct Harness {
    child: Child,
    work: PathBuf,
    name: String,
    started: Instant,
}

impl Harness {
    /// `cdi-harness <args>` from the repository root, `--json` appended for `run`.
    fn start(work: &Path, name: &str, args: &[&str]) -> Harness {
        Harness::start_with(work, name, args, |_| {})
    }

    fn start_with(
        work: &Path,
        name: &str,
        args: &[&str],
        adjust: impl FnOnce(&mut Command),
    ) -> Harness {
        let tmp = work.join("tmp");
        std::fs::create_dir_all(&tmp).expect("tmp dir");
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .current_dir(repo())
            .env("TMPDIR", &tmp)
            .env_remove("CI")
            .env_remove("DOCKER_HOST")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(work.join(format!("{name}.out"))).expect("out"))
            .stderr(std::fs::File::create(work.join(format!("{name}.err"))).expect("err"));
        if args.first() == Some(&"run") && !args.contains(&"--json") {
            cmd.arg("--json").arg(work.join(format!("{name}.json")));
        }
        adjust(&mut cmd);
        Harness {
            child: cmd.spawn().expect("spawn cdi-harness"),
            work: work.to_path_buf(),
            name: name.to_string(),
            started: Instant::now(),
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on our own unreaped child.
        unsafe {
            libc::kill(self.pid() as libc::pid_t, sig);
        }
    }

    /// Waits for the exit, at most `limit`; past it the run is killed and the test fails.
    fn wait(&mut self, limit: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if start.elapsed() > limit {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "{} did not exit within {limit:?}; stderr:\n{}",
                    self.name,
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `sig` and waits for the exit, which must come within `within` of the signal
    /// (at most `limit` is waited) with exit code `code`; returns stderr. `what` names
    /// the case in failure messages.
    fn signalled_exit(
        &mut self,
        sig: libc::c_int,
        within: Duration,
        limit: Duration,
        code: i32,
        what: &str,
    ) -> String {
        let t = Instant::now();
        self.signal(sig);
        let status = self.wait(limit);
        let took = t.elapsed();
        let err = self.stderr();
        assert!(
            took < within,
            "{what}: exited {took:?} after the signal: {err}"
        );
        assert_eq!(status.code(), Some(code), "{what}: {err}");
        err
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.work.join(format!("{}.err", self.name))).unwrap_or_default()
    }

    fn report(&self) -> serde_json::Value {
        let path = self.work.join(format!("{}.json", self.name));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "no report {}: {e}; stderr:\n{}",
                path.display(),
                self.stderr()
            )
        });
        serde_json::from_str(&text).expect("report parses")
    }

    /// The private engine directory this run made (`/tmp/cdih-*` whose `owner` file
    /// names it), waiting for it at most `limit`.
    fn engine_dir(&self, limit: Duration) -> Option<PathBuf> {
        let pid = self.pid().to_string();
        let mut found = None;
        wait_until(limit, || {
            found = engine_dirs()
                .into_iter()
                .find(|d| read_trim(&d.join("owner")) == pid);
            found.is_some()
        });
        found
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The pid of a run's private dockerd (from its engine dir), after sending it `sig`.
fn signal_dockerd(dir: &Path, sig: libc::c_int) -> u32 {
    let dockerd: u32 = read_trim(&dir.join("d.pid")).parse().expect("d.pid");
    // SAFETY: kill(2) of the run's own dockerd, a pid it wrote itself.
    unsafe {
        libc::kill(dockerd as libc::pid_t, sig);
    }
    dockerd
}

fn read_trim(p: &Path) -> String {
    std::fs::read_to_string(p)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn engine_dirs() -> Vec<PathBuf> {
    std::fs::read_dir("/tmp")
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("cdih-"))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Polls `cond` every 20 ms until it holds or `limit` passes; whether it held.
fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One HTTP/1.0 GET on a unix socket (the private engine's API), bounded.
fn http_get(socket: &Path, path: &str) -> Option<String> {
    let mut s = UnixStream::connect(socket).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(1))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: docker\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// Whether the engine at `dir` (rootful or rootless) has a container whose label value
/// starts with `check` (end it with `"` to match it whole).
fn has_container(dir: &Path, check: &str) -> bool {
    ["d.sock", "xdg/docker.sock"].iter().any(|sock| {
        http_get(&dir.join(sock), "/containers/json?all=1")
            .is_some_and(|body| body.contains(&format!("\"{check}")))
    })
}

/// Every live process descending from `root` (by parent pid), with its uid.
fn descendants(root: u32) -> Vec<(u32, u32)> {
    let mut parent = std::collections::BTreeMap::new();
    let mut uid = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse::<u32>().ok())
        };
        if let (Some(pp), Some(u)) = (field("PPid:"), field("Uid:")) {
            parent.insert(pid, pp);
            uid.insert(pid, u);
        }
    }
    parent
        .keys()
        .filter(|&&p| {
            let mut cur = p;
            for _ in 0..64 {
                match parent.get(&cur) {
                    Some(&pp) if pp == root => return true,
                    Some(&pp) if pp > 1 => cur = pp,
                    _ => return false,
                }
            }
            false
        })
        .map(|p| (*p, uid[p]))
        .collect()
}

fn rootless_uid() -> Option<u32> {
    let out = Command::new("id")
        .args(["-u", cdi_harness::sim::DEFAULT_ROOTLESS_USER])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// The pids of processes whose command line contains `text`.
fn processes_with(text: &str) -> Vec<u32> {
    let mut out = Vec::new();
    let me = std::process::id();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(text) && !cdi_harness::engine::process_gone(pid) {
            out.push(pid);
        }
    }
    out
}

fn mounts_with(text: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(text))
        .map(str::to_string)
        .collect()
}

/// What a finished run left: its process, its spec dirs (in its TMPDIR), its engine
/// directory, processes and mounts of that engine. Waits up to 3 s for it to settle.
fn leftovers(h: &Harness, engine_dir: Option<&Path>) -> Vec<String> {
    let mut left = Vec::new();
    wait_until(Duration::from_secs(3), || {
        left.clear();
        if !cdi_harness::engine::process_gone(h.pid()) {
            left.push(format!("the harness process {}", h.pid()));
        }
        for e in std::fs::read_dir(h.work.join("tmp"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if e.file_name().to_string_lossy().starts_with("cdih-spec-") {
                left.push(format!("spec dir {}", e.path().display()));
            }
        }
        if let Some(dir) = engine_dir {
            let marker = dir
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            if dir.exists() {
                left.push(format!("engine dir {}", dir.display()));
            }
            for pid in processes_with(&marker) {
                left.push(format!("process {pid} of engine {marker}"));
            }
            for m in mounts_with(&dir.display().to_string()) {
                left.push(format!("mount {m}"));
            }
        }
        left.is_empty()
    });
    left
}

fn results(report: &serde_json::Value) -> Vec<serde_json::Value> {
    report["results"].as_array().cloned().unwrap_or_default()
}

fn result<'a>(all: &'a [serde_json::Value], check: &str) -> &'a serde_json::Value {
    all.iter()
        .find(|r| r["check"] == check)
        .unwrap_or_else(|| panic!("no result for {check}: {all:#?}"))
}

fn assert_no_harness_bug(all: &[serde_json::Value]) {
    for r in all {
        assert_ne!(r["cause"], "harness-bug", "{r:#}");
    }
}

// ---------------------------------------------------------------------------------------
// Without an engine
// ---------------------------------------------------------------------------------------

#[test]
fn closed_stdout_ends_quietly_and_every_report_is_written() {
    let work = tempfile::tempdir().expect("tempdir");
    let w = work.path();
    // Reports into directories that do not exist yet: created alike for every kind.
    let md = w.join("md/sub/r.md");
    let junit = w.join("junit/r.xml");
    let mut h = Harness::start_with(
        w,
        "closed",
        &[
            "run",
            "--backend",
            "host",
            "--docker-host",
            "unix:///nonexistent/cdih-faults.sock",
            "--scenario",
            "harness/tests/fixtures/scenarios/host-1gpu.toml",
        ],
        |c| {
            c.arg("--markdown").arg(&md).arg("--junit").arg(&junit);
            c.stdout(Stdio::piped());
        },
    );
    drop(h.child.stdout.take()); // the reader is gone: every write gets EPIPE
    let status = h.wait(Duration::from_secs(30));
    let err = h.stderr();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let report = h.report();
    let all = results(&report);
    let setup = result(&all, "setup");
    assert_eq!(setup["cause"], "engine-unreachable", "{setup:#}");
    assert!(
        std::fs::read_to_string(&md)
            .expect("markdown")
            .contains("setup")
    );
    assert!(
        std::fs::read_to_string(&junit)
            .expect("junit")
            .contains("<testsuite")
    );

    // `scenario check … 2>&1 | head -c 0`: both streams closed, valid and invalid input.
    for (arg, code) in [("scenarios", 0), ("/dev/zero", 2)] {
        let mut c = Command::new(BIN)
            .args(["scenario", "check", arg])
            .current_dir(repo())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        drop(c.stdout.take());
        drop(c.stderr.take());
        let status = c.wait().expect("wait");
        assert_eq!(status.code(), Some(code), "scenario check {arg}: {status}");
    }
}

#[test]
fn hostile_scenario_files_fail_at_once_naming_the_file() {
    let work = tempfile::tempdir().expect("tempdir");
    let w = work.path();
    let fifo = w.join("fifo.toml");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: mkfifo on a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let empty = w.join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    let latin1 = w.join("latin1.toml");
    std::fs::write(&latin1, b"description = \"caf\xe9\"\n").expect("write");
    let base = "description = \"d\"\n[machine.virtualisation.docker]\nenable = true\n";
    let zero = w.join("zero.toml");
    std::fs::write(&zero, format!("{base}[gpus]\ncount = 0\n")).expect("write");
    let empty_cmd = w.join("empty-cmd.toml");
    std::fs::write(
        &empty_cmd,
        format!("{base}[gpus]\ncount = 1\n[[run]]\nname = \"x\"\ncommand = [\"\"]\nexpect = \"success\"\n"),
    )
    .expect("write");
    let cases: Vec<(PathBuf, String)> = vec![
        (
            fifo.clone(),
            format!(
                "{}: is a FIFO (named pipe), not a scenario file",
                fifo.display()
            ),
        ),
        (
            "/dev/zero".into(),
            "/dev/zero: is a character device, not a scenario file".into(),
        ),
        (
            empty.clone(),
            format!(
                "{}: no scenario files (*.toml) in this directory",
                empty.display()
            ),
        ),
        (
            latin1.clone(),
            format!("{}: not valid UTF-8", latin1.display()),
        ),
        (
            zero.clone(),
            format!(
                "{}: `gpus.count`: is 0: a machine without GPUs must say so with `none = true`",
                zero.display()
            ),
        ),
        (
            empty_cmd.clone(),
            format!("{}: `run[0].command[0]`: is empty", empty_cmd.display()),
        ),
    ];
    for (i, (path, message)) in cases.iter().enumerate() {
        for sub in [
            &["scenario", "check"][..],
            &["run", "--backend", "sim", "--scenario"][..],
        ] {
            let mut args: Vec<&str> = sub.to_vec();
            args.push(path.to_str().expect("utf-8 path"));
            let name = format!("case{i}-{}", sub[0]);
            let mut h = Harness::start(w, &name, &args);
            let status = h.wait(Duration::from_secs(5));
            assert!(
                h.started.elapsed() < Duration::from_secs(3),
                "{name} took long"
            );
            let err = h.stderr();
            assert_eq!(status.code(), Some(2), "{name}: {err}");
            assert!(
                err.contains(message),
                "{name}: expected {message:?} in {err}"
            );
        }
    }
}

/// A unix socket server for the cases below: `answer` decides, per request line, the
/// response to send (`None`: never answer, hold the connection).
struct FakeEngine {
    path: PathBuf,
    stop: Arc<AtomicBool>,
}

impl FakeEngine {
    fn start(
        path: PathBuf,
        answer: impl Fn(&str) -> Option<String> + Send + Sync + 'static,
    ) -> FakeEngine {
        let listener = UnixListener::bind(&path).expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let answer = Arc::new(answer);
        std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut conn, _)) => {
                        let answer = answer.clone();
                        let flag = flag.clone();
                        std::thread::spawn(move || {
                            let _ = conn.set_nonblocking(false);
                            let _ = conn.set_read_timeout(Some(Duration::from_millis(100)));
                            let mut buf = Vec::new();
                            let mut chunk = [0u8; 4096];
                            while !flag.load(Ordering::SeqCst) {
                                match conn.read(&mut chunk) {
                                    Ok(0) => return,
                                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                                    Err(_) => continue,
                                }
                                while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n")
                                {
                                    let req = String::from_utf8_lossy(&buf[..end]).into_owned();
                                    buf.drain(..end + 4);
                                    let line = req.lines().next().unwrap_or_default().to_string();
                                    match answer(&line) {
                                        // Hang up without a word.
                                        Some(resp) if resp.is_empty() => return,
                                        Some(resp) => {
                                            let _ = conn.write_all(resp.as_bytes());
                                        }
                                        // Hold the connection, answer nothing, until the end.
                                        None => {
                                            while !flag.load(Ordering::SeqCst) {
                                                std::thread::sleep(Duration::from_millis(50));
                                            }
                                            return;
                                        }
                                    }
                                }
                            }
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        FakeEngine { path, stop }
    }

    fn uri(&self) -> String {
        format!("unix://{}", self.path.display())
    }
}

impl Drop for FakeEngine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn http_ok(body: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nApi-Version: 1.43\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// A host run against `uri` on the seed scenario.
fn host_run(w: &Path, name: &str, uri: &str, extra: &[&str]) -> Harness {
    let mut args = vec![
        "run",
        "--backend",
        "host",
        "--docker-host",
        uri,
        "--scenario",
        "harness/tests/fixtures/scenarios/host-1gpu.toml",
        "-q",
    ];
    args.extend_from_slice(extra);
    Harness::start(w, name, &args)
}

#[test]
fn sockets_that_refuse_hang_up_or_never_answer_say_what_happened() {
    let work = tempfile::tempdir().expect("tempdir");
    let w = work.path();

    // A socket file nobody listens on any more: ECONNREFUSED.
    let refused = w.join("refused.sock");
    drop(UnixListener::bind(&refused).expect("bind"));
    // Accepts, reads, and closes without a word.
    let lost = FakeEngine::start(w.join("lost.sock"), |_| Some(String::new()));
    // Accepts and never answers.
    let silent = FakeEngine::start(w.join("silent.sock"), |_| None);

    let cases = [
        (
            format!("unix://{}", refused.display()),
            "refused the connection",
            "engine-unreachable",
        ),
        (
            lost.uri(),
            "closed the connection during `ping` without an answer",
            "engine-unreachable",
        ),
        (
            silent.uri(),
            "stopped answering: it did not answer `ping` within 1 s",
            "timeout",
        ),
    ];
    for (i, (uri, message, cause)) in cases.iter().enumerate() {
        let name = format!("socket{i}");
        let mut h = host_run(w, &name, uri, &["--call-timeout", "1"]);
        let status = h.wait(Duration::from_secs(20));
        assert_eq!(status.code(), Some(1), "{name}: {}", h.stderr());
        let report = h.report();
        let all = results(&report);
        let setup = result(&all, "setup");
        let text = setup["message"].as_str().unwrap_or_default();
        assert!(text.contains(message), "{name}: {text}");
        assert!(
            !text.contains("hyper"),
            "{name}: a raw transport error: {text}"
        );
        assert_eq!(setup["cause"], *cause, "{name}: {setup:#}");
        // Checks are not blamed for it: they point at `setup`.
        let spec = result(&all, "spec_present");
        assert!(
            spec["message"]
                .as_str()
                .unwrap_or_default()
                .contains("host-1gpu::setup"),
            "{spec:#}"
        );
    }

    // A hung engine and Ctrl-C, SIGTERM or SIGHUP: the run ends at once, interrupted.
    for (i, (sig, code, name)) in [
        (libc::SIGINT, 130, "Ctrl-C"),
        (libc::SIGTERM, 143, "SIGTERM"),
        (libc::SIGHUP, 129, "SIGHUP"),
    ]
    .into_iter()
    .enumerate()
    {
        let run = format!("hung{i}");
        let mut h = host_run(w, &run, &silent.uri(), &["--call-timeout", "60"]);
        std::thread::sleep(Duration::from_millis(700));
        let err = h.signalled_exit(
            sig,
            Duration::from_secs(3),
            Duration::from_secs(15),
            code,
            &run,
        );
        assert!(
            err.contains(&format!("interrupted ({name})")),
            "{run}: {err}"
        );
        let report = h.report();
        assert_eq!(report["interrupted"], true, "{run}");
        let spec = result(&results(&report), "spec_present").clone();
        assert_eq!(spec["cause"], "interrupted", "{run}: {spec:#}");
    }
}

#[test]
fn a_hung_engine_is_left_after_a_short_deadline_and_a_second_ctrl_c_exits_at_once() {
    let work = tempfile::tempdir().expect("tempdir");
    let w = work.path();
    // Answers the handshake, then hangs on every other call (info, containers, …).
    let fake = FakeEngine::start(w.join("hung.sock"), |line| {
        if line.contains("/_ping") {
            Some(http_ok("OK"))
        } else if line.contains("/containers/json") && !line.contains("cdi-harness.run%3D") {
            // The look for dead runs' containers (any run) finds none; the cleanup's
            // look for this run's own (`run=<id>`) hangs like everything else.
            Some(http_ok("[]"))
        } else if line.contains("/version") {
            Some(http_ok(
                r#"{"ApiVersion":"1.43","MinAPIVersion":"1.24","Version":"26.1.5"}"#,
            ))
        } else {
            None
        }
    });

    // One Ctrl-C: the in-flight calls are cancelled, the cleanup gets its short deadline.
    let mut once = host_run(w, "once", &fake.uri(), &["--call-timeout", "60"]);
    std::thread::sleep(Duration::from_millis(1500));
    let err = once.signalled_exit(
        libc::SIGINT,
        Duration::from_secs(12),
        Duration::from_secs(30),
        130,
        "once",
    );
    assert!(
        err.contains("may be left on it; the next run removes them"),
        "{err}"
    );
    assert_eq!(once.report()["interrupted"], true);

    // A second Ctrl-C during that cleanup: out at once, saying what may be left.
    let mut twice = host_run(w, "twice", &fake.uri(), &["--call-timeout", "60"]);
    std::thread::sleep(Duration::from_millis(1500));
    twice.signal(libc::SIGINT);
    std::thread::sleep(Duration::from_millis(500));
    let err = twice.signalled_exit(
        libc::SIGINT,
        Duration::from_secs(1),
        Duration::from_secs(10),
        130,
        "twice",
    );
    assert!(
        err.contains("Ctrl-C again: exiting now without cleaning up"),
        "{err}"
    );
    assert!(
        err.contains(&format!("{OWNER_LABEL}=")) && err.contains(&format!("/{}", twice.pid())),
        "{err}"
    );
}

/// A tmpfs of 64 KiB, unmounted on drop.
struct SmallDisk(PathBuf);

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_keeps_the_previous_reports_whole() {
    if cannot_run((euid() != 0).then(|| "mounting a small tmpfs needs root".to_string())) {
        return;
    }
    let work = tempfile::tempdir().expect("tempdir");
    let w = work.path();
    let disk = w.join("disk");
    std::fs::create_dir(&disk).expect("mkdir");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(&disk)
        .status()
        .expect("mount");
    assert!(mounted.success(), "mount -t tmpfs failed");
    let guard = SmallDisk(disk.clone());
    let files = [disk.join("r.json"), disk.join("r.md"), disk.join("r.xml")];
    for f in &files {
        std::fs::write(f, "the previous report\n").expect("previous report");
    }
    // Fill the rest of the disk.
    let mut filler = std::fs::File::create(disk.join("filler")).expect("filler");
    let block = [0u8; 4096];
    while filler.write_all(&block).is_ok() {}
    drop(filler);

    let mut h = Harness::start_with(
        w,
        "full",
        &[
            "run",
            "--backend",
            "host",
            "--docker-host",
            "unix:///nonexistent/cdih-faults.sock",
            "--scenario",
            "harness/tests/fixtures/scenarios/host-1gpu.toml",
            "-q",
            "--json",
            files[0].to_str().expect("utf-8"),
        ],
        |c| {
            c.arg("--markdown")
                .arg(&files[1])
                .arg("--junit")
                .arg(&files[2]);
        },
    );
    let status = h.wait(Duration::from_secs(30));
    let err = h.stderr();
    assert_eq!(status.code(), Some(2), "{err}");
    for f in &files {
        assert!(
            err.contains(&format!("could not write {}", f.display())),
            "{}: {err}",
            f.display()
        );
        assert_eq!(
            std::fs::read_to_string(f).expect("still there"),
            "the previous report\n",
            "{} was damaged",
            f.display()
        );
    }
    assert!(err.contains("the disk is not full"), "{err}");
    let names: Vec<String> = std::fs::read_dir(&disk)
        .expect("list")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| !n.ends_with(".tmp")),
        "temporary files left: {names:?}"
    );
    drop(guard);
    assert!(
        mounts_with(&disk.display().to_string()).is_empty(),
        "the tmpfs is still mounted"
    );
}

// ---------------------------------------------------------------------------------------
// With private engines (root)
// ---------------------------------------------------------------------------------------

/// A sim run of the seed scenario.
fn sim_run(w: &Path, name: &str, extra: &[&str]) -> Harness {
    sim_run_of(w, name, "seed", extra)
}

/// A sim run of `scenarios/<scenario>.toml`.
fn sim_run_of(w: &Path, name: &str, scenario: &str, extra: &[&str]) -> Harness {
    let file = format!("scenarios/{scenario}.toml");
    let mut args = vec!["run", "--backend", "sim", "--scenario", &file, "-q"];
    args.extend_from_slice(extra);
    Harness::start(w, name, &args)
}

/// Where in a sim run a fault is injected.
#[derive(Debug, Clone, Copy)]
enum Point {
    /// The engine is starting (its directory exists).
    Prepare,
    /// A device check's container exists.
    Gather,
    /// The `restart_always` container exists.
    Restart,
}

/// Waits until the seed run reaches `point`; returns its engine directory.
fn reach(h: &Harness, point: Point) -> PathBuf {
    reach_in(h, "seed", point)
}

/// Waits until the run of `scenario` reaches `point`; returns its engine directory.
fn reach_in(h: &Harness, scenario: &str, point: Point) -> PathBuf {
    let dir = h
        .engine_dir(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("{}: no engine directory; stderr:\n{}", h.name, h.stderr()));
    let check = match point {
        Point::Prepare => return dir,
        // Any device check's container (each lives a few tenths of a second).
        Point::Gather => format!("{scenario}::device_"),
        Point::Restart => format!("{scenario}::restart_always\""),
    };
    assert!(
        wait_until(Duration::from_secs(30), || has_container(&dir, &check)),
        "{}: never saw {check}; stderr:\n{}",
        h.name,
        h.stderr()
    );
    dir
}

#[test]
fn signals_at_several_points_clean_up_and_report_interrupted() {
    let Some((_one, work)) = engine_case() else {
        return;
    };
    let w = work.path();
    for (i, (sig, code, label, point)) in [
        (libc::SIGTERM, 143, "SIGTERM", Point::Prepare),
        (libc::SIGINT, 130, "Ctrl-C", Point::Gather),
        (libc::SIGHUP, 129, "SIGHUP", Point::Restart),
    ]
    .into_iter()
    .enumerate()
    {
        let name = format!("sig{i}");
        let mut h = sim_run(w, &name, &[]);
        let dir = reach(&h, point);
        let err = h.signalled_exit(
            sig,
            Duration::from_secs(10),
            Duration::from_secs(30),
            code,
            &format!("{name} {point:?}"),
        );
        assert!(
            err.contains(&format!("interrupted ({label})")),
            "{name}: {err}"
        );
        let report = h.report();
        assert_eq!(report["interrupted"], true, "{name}");
        let all = results(&report);
        assert_no_harness_bug(&all);
        assert!(
            all.iter().any(|r| r["cause"] == "interrupted"),
            "{name} {point:?}: nothing says interrupted: {all:#?}"
        );
        if let Point::Restart = point {
            // What finished before the signal keeps its verdict.
            assert_eq!(result(&all, "device_all")["status"], "pass", "{name}");
            assert_eq!(result(&all, "spec_valid")["status"], "pass", "{name}");
        }
        let left = leftovers(&h, Some(&dir));
        assert!(left.is_empty(), "{name} {point:?} left: {left:?}");
    }

    // A rootless engine (rootlesskit, slirp4netns, dockerd as another user): after
    // Ctrl-C none of that user's processes the run started is left.
    let Some(uid) = rootless_uid() else {
        cannot_run(Some(format!(
            "no user {} (`.ci/install-engine` creates it)",
            cdi_harness::sim::DEFAULT_ROOTLESS_USER
        )));
        return;
    };
    let mut h = sim_run_of(w, "rootless", "rootless-default", &[]);
    let dir = reach_in(&h, "rootless-default", Point::Gather);
    let theirs: Vec<u32> = descendants(h.pid())
        .into_iter()
        .filter(|(_, u)| *u == uid)
        .map(|(p, _)| p)
        .collect();
    assert!(
        !theirs.is_empty(),
        "no process of the rootless user was seen"
    );
    h.signal(libc::SIGINT);
    let status = h.wait(Duration::from_secs(30));
    assert_eq!(status.code(), Some(130), "{}", h.stderr());
    assert_eq!(h.report()["interrupted"], true);
    let left = leftovers(&h, Some(&dir));
    assert!(left.is_empty(), "rootless left: {left:?}");
    let alive: Vec<u32> = theirs
        .into_iter()
        .filter(|p| !cdi_harness::engine::process_gone(*p))
        .collect();
    assert!(
        alive.is_empty(),
        "processes of the rootless user left: {alive:?}"
    );
}

#[test]
fn a_killed_run_is_cleaned_up_by_the_next_one_which_says_so() {
    let Some((_one, work)) = engine_case() else {
        return;
    };
    let w = work.path();
    let mut h = sim_run(w, "killed", &[]);
    let dir = reach(&h, Point::Gather);
    h.signal(libc::SIGKILL);
    let status = h.wait(Duration::from_secs(10));
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    // Its engine dies with it (PR_SET_PDEATHSIG); its directories stay behind.
    let marker = dir
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    assert!(
        wait_until(Duration::from_secs(30), || processes_with(&marker)
            .is_empty()),
        "the killed run's engine outlived it: {:?}",
        processes_with(&marker)
    );
    assert!(
        dir.exists(),
        "nothing was left to sweep (the case proves nothing)"
    );
    let spec_dirs: Vec<PathBuf> = std::fs::read_dir(w.join("tmp"))
        .expect("tmp")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(!spec_dirs.is_empty(), "no spec dir was left to sweep");

    // The next run (one check) finds and removes both, and says so.
    let mut next = sim_run(w, "next", &["--filter", "seed::spec_present"]);
    let status = next.wait(Duration::from_secs(30));
    let err = next.stderr();
    assert_eq!(status.code(), Some(0), "{err}");
    for d in std::iter::once(&dir).chain(&spec_dirs) {
        assert!(
            err.contains(&format!(
                "note: removed {} left by a harness run that died",
                d.display()
            )),
            "{}: {err}",
            d.display()
        );
        assert!(!d.exists(), "{} is still there", d.display());
    }
    let left = leftovers(&h, Some(&dir));
    assert!(left.is_empty(), "left: {left:?}");
}

#[test]
fn an_engine_that_dies_during_restart_always_fails_the_run() {
    let Some((_one, work)) = engine_case() else {
        return;
    };
    let w = work.path();
    // Killed while the device containers run: the run fails with that cause.
    let mut h = sim_run(w, "died-mid", &["--call-timeout", "3"]);
    let dir = reach(&h, Point::Gather);
    signal_dockerd(&dir, libc::SIGKILL);
    let status = h.wait(Duration::from_secs(60));
    assert_eq!(status.code(), Some(1), "{}", h.stderr());
    let all = results(&h.report());
    assert_no_harness_bug(&all);
    let setup = result(&all, "setup");
    assert_eq!(setup["cause"], "engine-died", "{setup:#}");
    assert!(
        setup["message"]
            .as_str()
            .unwrap_or_default()
            .contains("the private engine died during the run (signal: 9 (SIGKILL))"),
        "{setup:#}"
    );
    assert_ne!(result(&all, "restart_always")["status"], "pass");
    let left = leftovers(&h, Some(&dir));
    assert!(left.is_empty(), "died-mid left: {left:?}");

    // The harness is frozen while its engine is killed, so the kill lands before the
    // check's own restart (if the restart had already begun, that attempt is retried).
    for attempt in 0..3 {
        let name = format!("died{attempt}");
        let mut h = sim_run(w, &name, &["--call-timeout", "3"]);
        let dir = reach(&h, Point::Restart);
        h.signal(libc::SIGSTOP);
        let log = std::fs::read_to_string(dir.join("dockerd.log")).unwrap_or_default();
        let restarting = log.contains("Processing signal 'terminated'");
        if !restarting {
            let dockerd = signal_dockerd(&dir, libc::SIGKILL);
            assert!(wait_until(Duration::from_secs(10), || {
                cdi_harness::engine::process_gone(dockerd)
            }));
        }
        h.signal(libc::SIGCONT);
        let status = h.wait(Duration::from_secs(60));
        let err = h.stderr();
        let left = leftovers(&h, Some(&dir));
        assert!(left.is_empty(), "{name} left: {left:?}");
        if restarting {
            eprintln!("{name}: the check's restart had begun; trying again");
            continue;
        }
        assert_eq!(status.code(), Some(1), "{name}: {err}");
        let all = results(&h.report());
        assert_no_harness_bug(&all);
        let restart = result(&all, "restart_always");
        assert_ne!(restart["status"], "pass", "a masked verdict: {restart:#}");
        let died = all
            .iter()
            .find(|r| r["cause"] == "engine-died" && r["status"] == "fail")
            .unwrap_or_else(|| panic!("nothing failed with engine-died: {all:#?}"));
        assert!(
            died["message"]
                .as_str()
                .unwrap_or_default()
                .contains("died"),
            "{died:#}"
        );
        let setup = result(&all, "setup");
        assert_eq!(setup["cause"], "engine-died", "{setup:#}");
        return;
    }
    panic!("the check's restart began before the kill in every attempt");
}

#[test]
fn a_stopped_engine_times_out_or_yields_to_ctrl_c_and_is_taken_down() {
    let Some((_one, work)) = engine_case() else {
        return;
    };
    let w = work.path();

    // SIGSTOPped mid-run, then Ctrl-C: out within the short deadline, nothing left.
    let mut h = sim_run(w, "stopped-int", &["--call-timeout", "30"]);
    let dir = reach(&h, Point::Gather);
    signal_dockerd(&dir, libc::SIGSTOP);
    std::thread::sleep(Duration::from_millis(500));
    h.signalled_exit(
        libc::SIGINT,
        Duration::from_secs(8),
        Duration::from_secs(30),
        130,
        "stopped-int",
    );
    assert_eq!(h.report()["interrupted"], true);
    let left = leftovers(&h, Some(&dir));
    assert!(left.is_empty(), "left: {left:?}");

    // SIGSTOPped and left alone: the calls time out, the run fails and cleans up.
    let mut h = sim_run(
        w,
        "stopped",
        &["--call-timeout", "2", "--container-timeout", "4"],
    );
    let dir = reach(&h, Point::Gather);
    signal_dockerd(&dir, libc::SIGSTOP);
    let status = h.wait(Duration::from_secs(90));
    let err = h.stderr();
    assert_eq!(status.code(), Some(1), "{err}");
    let all = results(&h.report());
    assert_no_harness_bug(&all);
    assert!(all.iter().any(|r| r["cause"] == "timeout"), "{all:#?}");
    let left = leftovers(&h, Some(&dir));
    assert!(left.is_empty(), "left: {left:?}");
}

#[test]
fn a_spec_rewritten_or_deleted_during_a_run_fails_the_spec_checks() {
    let Some((_one, work)) = engine_case() else {
        return;
    };
    let w = work.path();
    for (i, (change, check, cause)) in [
        (Some("{ not a spec"), "spec_valid", "spec-invalid"),
        (None, "spec_present", "spec-missing"),
    ]
    .into_iter()
    .enumerate()
    {
        let name = format!("spec{i}");
        let mut h = sim_run(w, &name, &[]);
        let tmp = w.join("tmp");
        let mut spec = None;
        assert!(wait_until(Duration::from_secs(30), || {
            spec = std::fs::read_dir(&tmp)
                .into_iter()
                .flatten()
                .flatten()
                .find_map(|e| {
                    let p = e.path().join("run/cdi/nvidia-container-toolkit.json");
                    (e.file_name()
                        .to_string_lossy()
                        .starts_with(&format!("cdih-spec-{}-", h.pid()))
                        && p.exists())
                    .then_some(p)
                });
            spec.is_some()
        }));
        let spec = spec.expect("spec");
        match change {
            Some(text) => std::fs::write(&spec, text).expect("rewrite"),
            None => std::fs::remove_file(&spec).expect("delete"),
        }
        let dir = h.engine_dir(Duration::from_secs(10));
        let status = h.wait(Duration::from_secs(60));
        let err = h.stderr();
        assert_eq!(status.code(), Some(1), "{name}: {err}");
        let all = results(&h.report());
        assert_no_harness_bug(&all);
        let r = result(&all, check);
        assert_eq!(r["status"], "fail", "{name}: {r:#}");
        assert_eq!(r["cause"], cause, "{name}: {r:#}");
        let left = leftovers(&h, dir.as_deref());
        assert!(left.is_empty(), "{name} left: {left:?}");
    }
}

#[test]
fn host_runs_on_one_engine_signals_and_a_dead_runs_containers() {
    let Some((_one, work)) = engine_case() else {
        return;
    };
    let w = work.path();
    let rt = cdi_harness::rt::runtime().expect("runtime");
    // One private engine, shared by every case here, as a `host` engine.
    let base = "description = \"faults host machine\"\n[machine.virtualisation.docker]\nenable = true\n[machine.hardware.nvidia-container-toolkit]\nenable = true\n[gpus]\ncount = 1\n";
    let seed = cdi_harness::scenario::parse(Path::new("faults.toml"), base).expect("parses");
    let mut env = rt
        .block_on(cdi_harness::runner::start_sim(
            &seed,
            None,
            Timeouts::default(),
        ))
        .unwrap_or_else(|e| panic!("a private engine: {e}"));
    let socket = env.engine.socket_path().to_path_buf();
    let uri = format!("unix://{}", socket.display());
    let scenario = w.join("faults.toml");
    std::fs::write(
        &scenario,
        format!(
            "{base}[[run]]\nname = \"long\"\ncommand = [\"/bin/busybox\", \"sleep\", \"30\"]\nexpect = \"success\"\n"
        ),
    )
    .expect("scenario");
    let short = w.join("short.toml");
    std::fs::write(
        &short,
        format!(
            "{base}[[run]]\nname = \"brief\"\ncommand = [\"/bin/busybox\", \"sh\", \"-c\", \"sleep 2; echo done\"]\nexpect = \"success\"\nstdout-contains = [\"done\"]\n"
        ),
    )
    .expect("scenario");
    let run = |name: &str, file: &Path, filter: &str| {
        Harness::start(
            w,
            name,
            &[
                "run",
                "--backend",
                "host",
                "--docker-host",
                &uri,
                "--image",
                cdi_harness::sim::SIM_IMAGE,
                "--scenario",
                file.to_str().expect("utf-8"),
                "--filter",
                filter,
                "-q",
            ],
        )
    };
    let labelled = |owner: &str| {
        http_get(&socket, "/containers/json?all=1")
            .is_some_and(|b| b.contains(&format!("\"{OWNER_LABEL}\":\"{owner}\"")))
    };
    let hostname = read_trim(Path::new("/proc/sys/kernel/hostname"));

    // Two runs at once on one engine: each passes, neither removes the other's container.
    let mut a = run("two-a", &short, "short::");
    let mut b = run("two-b", &short, "short::");
    for h in [&mut a, &mut b] {
        let status = h.wait(Duration::from_secs(60));
        let all = results(&h.report());
        for check in ["brief", "no_leftovers"] {
            assert_eq!(
                result(&all, check)["status"],
                "pass",
                "{}: {all:#?}",
                h.name
            );
        }
        assert!(
            status.code() == Some(0) || status.code() == Some(1),
            "{status}"
        );
        assert!(!h.stderr().contains("note: removed"), "{}", h.stderr());
    }

    // SIGTERM while a container runs: it is removed, the report says interrupted.
    let mut h = run("term", &scenario, "faults::");
    let owner = format!("{hostname}/{}", h.pid());
    assert!(wait_until(Duration::from_secs(30), || labelled(&owner)));
    h.signal(libc::SIGTERM);
    let status = h.wait(Duration::from_secs(20));
    assert_eq!(status.code(), Some(143), "{}", h.stderr());
    assert_eq!(h.report()["interrupted"], true);
    assert!(
        !labelled(&owner),
        "SIGTERM left the run's container: {}\n{:#}",
        h.stderr(),
        h.report()
    );

    // SIGKILL while it runs: the container stays until the next run removes it.
    let mut h = run("kill", &scenario, "faults::");
    let owner = format!("{hostname}/{}", h.pid());
    assert!(wait_until(Duration::from_secs(30), || labelled(&owner)));
    h.signal(libc::SIGKILL);
    assert_eq!(
        h.wait(Duration::from_secs(10)).signal(),
        Some(libc::SIGKILL)
    );
    assert!(
        labelled(&owner),
        "the case proves nothing: no container was left"
    );
    // Past the grace time the next run removes it and says so.
    std::thread::sleep(Duration::from_secs(6));
    let mut next = run("after-kill", &scenario, "no_leftovers");
    let status = next.wait(Duration::from_secs(60));
    let err = next.stderr();
    assert!(
        err.contains(&format!(
            "left on {uri} by a harness run that died ({owner})"
        )) && err.contains("(faults::long)"),
        "{err}"
    );
    assert!(!labelled(&owner), "the dead run's container is still there");
    let all = results(&next.report());
    assert_eq!(result(&all, "no_leftovers")["status"], "pass", "{all:#?}");
    assert!(status.code().is_some());

    let left_any = http_get(&socket, "/containers/json?all=1").unwrap_or_default();
    rt.block_on(env.stop());
    assert!(
        !left_any.contains(OWNER_LABEL),
        "containers left on the shared engine: {left_any}"
    );
}
