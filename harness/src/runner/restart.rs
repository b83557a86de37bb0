//! The `restart_always` flow (moby#49989) on the sim's private engine: a
//! `--restart always` GPU container, the engine restarted, the container awaited.

use std::time::{Duration, Instant};

use super::{RunOptions, Session, interrupted};
use crate::checks;
use crate::engine::{self, Engine, RunRequest};
use crate::scenario::Scenario;
use crate::sim;

/// How long a `--restart always` container gets to run again (with a new GPU listing)
/// after the restarted engine answers.
const RESTART_BACK_WITHIN: Duration = Duration::from_secs(20);
/// The test container's stop timeout, so the engine's shutdown does not wait 10 s for
/// a PID 1 that ignores SIGTERM.
const RESTART_STOP_TIMEOUT_S: i64 = 1;
/// The line the test container prints after a complete `nvidia-smi -L` listing: the log
/// is read while the container runs, and a listing read before it is written whole
/// would be compared with the next one as if GPUs had gone or come.
const LISTED: &str = "cdi-harness: listed";

/// The `restart_always` flow on `sim` (moby#49989): a labelled `--restart always
/// --device nvidia.com/gpu=all` container that lists the GPUs and sleeps, the private
/// engine restarted (SIGTERM, same command line), the client reconnected, the
/// container awaited with a new listing; then removed (the label sweep is the net).
pub(super) async fn restart_always(
    s: &Scenario,
    opts: &RunOptions,
    sess: &mut Session,
) -> checks::RestartOutcome {
    use checks::RestartOutcome as R;
    let Some(private) = sess.private.as_ref() else {
        return R::NotRun("no private engine to restart".into());
    };
    if private.engine.rootless_user().is_some() {
        return R::NotRun(
            "restarting a rootless private engine is not supported yet (rootlesskit would have to be restarted with dockerd); the rootful scenarios cover the engine's restart path".into(),
        );
    }
    let req = RunRequest {
        image: sess.image.clone(),
        // PID 1 ignores SIGTERM unless it traps it: without the trap, the engine's
        // shutdown waited out the stop timeout (1 s) before killing it.
        command: vec![
            "/bin/sh".into(),
            "-c".into(),
            format!(
                "trap 'exit 0' TERM; {{ nvidia-smi -L && echo '{LISTED}' && sleep 600; }} & wait"
            ),
        ],
        cdi_devices: vec!["nvidia.com/gpu=all".into()],
        gpus: None,
        runtime: None,
        check: format!("{}::restart_always", s.name),
    };
    let t0 = Instant::now();
    let id = match sess
        .engine
        .start_detached(&req, true, Some(RESTART_STOP_TIMEOUT_S))
        .await
    {
        Ok(Ok(id)) => id,
        Ok(Err(refused)) => return R::FirstStartFailed(format!("refused: {refused}")),
        Err(e) => return R::Error(e.to_string()),
    };
    let outcome = restart_and_await(opts, sess, &id, t0).await;
    let _ = sess.engine.remove(&id).await;
    outcome
}

/// Waits for the first listing, restarts the engine, reconnects, and waits for the
/// container to list the GPUs again: the outcome with the time of each step.
async fn restart_and_await(
    opts: &RunOptions,
    sess: &mut Session,
    id: &str,
    t0: Instant,
) -> checks::RestartOutcome {
    use checks::RestartOutcome as R;
    let before = match await_listing(&sess.engine, id, 0, opts.timeouts.call).await {
        Listing::Seen { gpus, lines } => (gpus, lines),
        Listing::Timeout { state, log, waited } => {
            return R::FirstStartFailed(format!(
                "not running with an nvidia-smi -L listing within {waited:.1?}: state {}, exit code {}{}; log: {}",
                state.status,
                state.exit_code,
                if state.error.is_empty() {
                    String::new()
                } else {
                    format!(", error: {}", state.error)
                },
                log.lines().rev().take(3).collect::<Vec<_>>().join(" / ")
            ));
        }
        Listing::Engine(e) => return R::Error(e),
    };
    let (before, before_lines) = before;
    let first_start = t0.elapsed();
    let t1 = Instant::now();
    let Some(private) = sess.private.as_mut() else {
        return R::NotRun("no private engine to restart".into());
    };
    // A hung engine does not exit on SIGTERM: Ctrl-C must not wait out the grace.
    let restarted = tokio::select! {
        r = private.engine.restart() => r,
        _ = opts.cancel.cancelled() => {
            return R::Error(interrupted("while the engine restarted").message);
        }
    };
    match restarted {
        Ok(()) => {}
        Err(sim::SimError::RestartUnsupported { reason }) => return R::NotRun(reason),
        Err(e) => return R::EngineRestartFailed(e.to_string()),
    }
    let engine_restart = t1.elapsed();
    let endpoint = sess.engine.endpoint().clone();
    let run_id = sess.engine.run_id().to_string();
    match Engine::connect(endpoint, opts.timeouts, &run_id).await {
        Ok(e) => sess.engine = e.cancelled_by(opts.cancel.clone()),
        Err(e) => return R::Error(format!("reconnecting after the engine restart: {e}")),
    }
    let t2 = Instant::now();
    match await_listing(&sess.engine, id, before_lines, RESTART_BACK_WITHIN).await {
        Listing::Seen { gpus, .. } => R::Back {
            before,
            after: gpus,
            first_start,
            engine_restart,
            back_after: t2.elapsed(),
        },
        Listing::Timeout { state, log, waited } => R::NotBack { waited, state, log },
        Listing::Engine(e) => R::Error(e),
    }
}

/// How waiting for a container's `nvidia-smi -L` listing ended.
enum Listing {
    /// Running, and its log after the first `skip` lines holds a whole listing (ended
    /// by [`LISTED`]): its GPUs, and how many lines of the log it took up to its end.
    Seen {
        gpus: Vec<crate::smi::ListedGpu>,
        lines: usize,
    },
    /// Not so within the limit: its last state and log.
    Timeout {
        state: engine::ContainerStateFacts,
        log: String,
        waited: Duration,
    },
    /// The engine never answered (the last error).
    Engine(String),
}

/// Polls the container's state and log until it runs and its log, past its first
/// `skip` lines (an earlier run's output), holds a whole listing; bounded by `limit`.
/// Engine errors are retried until then.
async fn await_listing(engine: &Engine, id: &str, skip: usize, limit: Duration) -> Listing {
    let start = Instant::now();
    let mut last: Option<(engine::ContainerStateFacts, String)> = None;
    let mut last_error = String::new();
    loop {
        match engine.container_state(id).await {
            Ok(state) => {
                let log = engine.container_logs(id).await.unwrap_or_default();
                if state.running
                    && let Some((gpus, lines)) = whole_listing(&log, skip)
                {
                    return Listing::Seen { gpus, lines };
                }
                last = Some((state, log));
            }
            // Interrupted: no point polling a cancelled engine until the limit.
            Err(e @ engine::EngineError::Interrupted { .. }) => {
                return Listing::Engine(e.to_string());
            }
            Err(e) => last_error = e.to_string(),
        }
        if start.elapsed() >= limit {
            return match last {
                Some((state, log)) => Listing::Timeout {
                    state,
                    log,
                    waited: start.elapsed(),
                },
                None => Listing::Engine(last_error),
            };
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The GPUs of the first whole listing in `log` past its first `skip` lines, and the
/// number of lines up to and including its [`LISTED`] line; `None` until that line is
/// there.
fn whole_listing(log: &str, skip: usize) -> Option<(Vec<crate::smi::ListedGpu>, usize)> {
    let lines: Vec<&str> = log.lines().collect();
    let end = skip + lines.get(skip..)?.iter().position(|l| l.trim() == LISTED)?;
    let gpus = crate::smi::parse_nvidia_smi_list(&lines[skip..end].join("\n"));
    Some((gpus, end + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GPU0: &str =
        "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-951bb44b-3cdc-ed41-87ae-69b7f66199ac)";
    const GPU1: &str =
        "GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-79e3cff3-f533-b5ad-13ba-50463eba7efc)";

    #[test]
    fn a_listing_counts_only_once_it_is_whole() {
        // Read while nvidia-smi was still writing: not a listing yet.
        assert!(whole_listing(&format!("{GPU0}\n"), 0).is_none());
        let first = format!("{GPU0}\n{GPU1}\n{LISTED}\n");
        let (gpus, lines) = whole_listing(&first, 0).unwrap();
        assert_eq!((gpus.len(), lines), (2, 3));
        // After the restart: the earlier run's lines are skipped, and the new run's
        // listing counts only once its end is written.
        let partial = format!("{first}{GPU0}\n");
        assert!(whole_listing(&partial, lines).is_none());
        let (again, total) = whole_listing(&format!("{partial}{GPU1}\n{LISTED}\n"), lines).unwrap();
        assert_eq!((again.len(), total), (2, 6));
        assert_eq!(again[1].uuid, gpus[1].uuid);
    }

    #[test]
    fn a_failed_listing_never_counts() {
        let log = "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n";
        assert!(whole_listing(log, 0).is_none());
        assert!(whole_listing("", 5).is_none());
    }
}
