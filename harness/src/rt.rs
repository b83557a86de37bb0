//! The one place that builds the async runtime, so every command, the test targets and
//! the synchronous probes run engine calls on the same kind of runtime with the same
//! drivers (I/O, time, signals) enabled.

/// A runtime for running engine calls to completion; the error says why none could be
/// started (it is reported as a configuration error).
pub fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

/// A single-threaded runtime, for a synchronous probe that makes one engine call (a
/// worker thread per core would only cost start-up time there).
pub fn current_thread() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}
