//! cdi-harness: proves that a machine really gives Docker containers its NVIDIA GPUs
//! through CDI (the Container Device Interface), the way NixOS does it.
//!
//! The crate is a library first so that the `cdi-harness` binary, the `cargo test`
//! harness (`tests/scenarios.rs`, libtest-mimic) and the benchmark all drive the same
//! code path: [`runner::run_scenarios`] turns scenario files into [`outcome::CheckResult`]s.
//! See `ARCHITECTURE.md` at the repository root for how the modules fit together.

pub mod bench;
pub mod cdi;
pub mod check_id;
pub mod checks;
pub mod diff;
pub mod doctor;
pub mod engine;
pub mod gpu;
pub mod hints;
pub mod host;
pub mod judge;
pub mod lint;
pub mod nightly;
pub mod nixos_eval;
pub mod outcome;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod sim;
pub mod smi;
pub mod snapshot;
#[cfg(test)]
mod testutil;
