//! `cdi-harness`: the command line, a thin shell over the library's [`cdi_harness::cli`],
//! where every command lives. Exit codes: 0 when every check passes, 1 when one fails
//! (or a spec is invalid), 2 on a usage or configuration error; 128 + the signal when a
//! run was interrupted (Ctrl-C 130, SIGTERM 143, SIGHUP 129).

fn main() -> std::process::ExitCode {
    cdi_harness::cli::main()
}
