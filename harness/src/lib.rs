//! cdi-harness: proves that a machine really gives Docker containers its NVIDIA GPUs
//! through CDI (the Container Device Interface), the way NixOS does it.
//!
//! The crate is a library first so that the `cdi-harness` binary, the `cargo test`
//! harness (`tests/scenarios.rs`, libtest-mimic) and the benchmark all drive the same
//! code path: [`runner::run_scenarios`] turns scenario files into [`outcome::CheckResult`]s.
//! See `ARCHITECTURE.md` at the repository root for how the modules fit together.

// Terminal output that never panics, for the commands whose printing lives in the
// library (`report judge`, `report diff`/`history`, `scenario nixos-eval`): std's
// `println!` panics on EPIPE, so `… | head` would abort them. Defined before the
// modules, these shadow std's macros in every one of them (as `main.rs` does for the
// binary).

/// `println!` that ignores a closed stdout.
#[allow(unused_macros)]
macro_rules! println {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// `print!` that ignores a closed stdout.
#[allow(unused_macros)]
macro_rules! print {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut stdout = std::io::stdout();
        let _ = write!(stdout, $($arg)*);
        let _ = stdout.flush();
    }};
}

/// `eprintln!` that ignores a closed stderr.
#[allow(unused_macros)]
macro_rules! eprintln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

pub mod bench;
pub mod cdi;
pub mod check_id;
pub mod checks;
pub mod cli;
pub mod diff;
pub mod doctor;
pub mod engine;
pub mod gpu;
pub mod hints;
pub mod host;
pub mod init;
pub mod judge;
pub mod lint;
pub mod local_image;
pub mod nightly;
pub mod nixos_eval;
pub mod outcome;
pub mod report;
pub mod rt;
pub mod runner;
pub mod safe_read;
pub mod scenario;
pub mod select;
pub mod sim;
pub mod smi;
pub mod snapshot;
#[cfg(test)]
mod testutil;
