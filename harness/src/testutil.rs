//! Helpers shared by the unit tests.

/// A test that cannot run here (a program missing, not root) fails with `reason`,
/// because a test that did not run must not be counted as passed; with
/// `CDI_HARNESS_ALLOW_SKIP=1`, the opt-out for machines that knowingly lack it, it
/// prints `skipped: <reason>` and returns, and the caller returns too. The same rule as
/// the engine tests (`harness/tests/sim_engine.rs`).
pub(crate) fn cannot_run(reason: &str) {
    if std::env::var_os("CDI_HARNESS_ALLOW_SKIP").is_some_and(|v| v == "1") {
        eprintln!("skipped: {reason}");
        return;
    }
    panic!("cannot run this test here: {reason} (set CDI_HARNESS_ALLOW_SKIP=1 to skip knowingly)");
}
