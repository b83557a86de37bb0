//! `cdi-harness lint`: finds the seed write-up's pitfalls in NixOS configuration files
//! before they reach a machine.
//!
//! The harness's checks prove a running machine; by then a manual `nvidia` runtime or a
//! `--gpus` script has already been deployed and broken. The lint reads the `.nix` files
//! themselves with a real Nix parser (`rnix`), flattens every way NixOS configuration
//! writes an option (nested sets, dotted paths, `mkIf`/`mkForce`/`mkMerge`, module
//! functions, `let`, `with`, explicit `config`, inline `imports`) into option definitions,
//! and reports each pitfall as `FILE:LINE:COL: <problem> (fix: <fix>)`. Nothing is
//! evaluated: the rules look at what a file writes, one file at a time.
//!
//! Exit codes as `cdi-harness run`: see [`LintReport::exit_code`].

mod defs;
mod rules;

use std::fmt;
use std::path::{Path, PathBuf};

use rnix::{ParseError, SyntaxKind, TextRange, TextSize};

/// The pitfalls the lint knows, in the order of the seed write-up's troubleshooting.
///
/// Each has a stable [`id`](Pitfall::id) so that callers (tests, CI annotations) need not
/// match message texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Pitfall {
    /// An NVIDIA runtime under `virtualisation.docker.daemon.settings.runtimes` (or the
    /// rootless engine's): the manual configuration that breaks after `nix flake update`.
    ManualRuntime,
    /// A reference to `nvidia-docker` (`pkgs.nvidia-docker`, `with pkgs; [ nvidia-docker ]`).
    NvidiaDocker,
    /// `virtualisation.docker.enableNvidia`, `virtualisation.podman.enableNvidia` or
    /// `virtualisation.containers.cdi.dynamic.nvidia.enable` set to `true`.
    EnableNvidia,
    /// Docker switched on in a file that does not switch the toolkit on.
    DockerWithoutToolkit,
    /// `features.cdi = false`, or a Docker package older than 25 (nixpkgs#305312).
    CdiOff,
    /// `default-runtime = "nvidia"` in the daemon settings.
    DefaultRuntime,
    /// The toolkit switched on in a file that holds the machine's NVIDIA (or whole)
    /// configuration but no driver the toolkit module's assertion accepts. A warning:
    /// another file of the machine may configure it.
    NoDriver,
    /// `--gpus` in a string (a script, `ExecStart`, `extraOptions`).
    GpusFlag,
}

impl Pitfall {
    /// A short stable name: `manual-runtime`, `nvidia-docker`, `enable-nvidia`,
    /// `docker-without-toolkit`, `cdi-off`, `default-runtime`, `no-driver`, `gpus-flag`.
    pub fn id(self) -> &'static str {
        match self {
            Pitfall::ManualRuntime => "manual-runtime",
            Pitfall::NvidiaDocker => "nvidia-docker",
            Pitfall::EnableNvidia => "enable-nvidia",
            Pitfall::DockerWithoutToolkit => "docker-without-toolkit",
            Pitfall::CdiOff => "cdi-off",
            Pitfall::DefaultRuntime => "default-runtime",
            Pitfall::NoDriver => "no-driver",
            Pitfall::GpusFlag => "gpus-flag",
        }
    }
}

/// How sure the lint is that a finding breaks the machine.
///
/// Both count for the exit code (a warning is still a pitfall found); a warning is
/// printed with `warning: ` before its problem because the file alone cannot settle it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// The file itself breaks GPU containers.
    Error,
    /// The file breaks GPU containers unless another file of the machine makes up for it.
    Warning,
}

/// One pitfall at one place in one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The file as it was named.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// Which pitfall.
    pub pitfall: Pitfall,
    /// Error or warning.
    pub severity: Severity,
    /// What is wrong, naming the option as the NixOS manual writes it.
    pub problem: String,
    /// What to do instead (the seed write-up's fix where it gives one).
    pub fix: String,
}

impl fmt::Display for Finding {
    /// `FILE:LINE:COL: <problem> (fix: <fix>)`, with `warning: ` before a warning's problem.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Error => "",
            Severity::Warning => "warning: ",
        };
        write!(
            f,
            "{}:{}:{}: {level}{} (fix: {})",
            self.file.display(),
            self.line,
            self.column,
            self.problem,
            self.fix
        )
    }
}

/// One syntax error of a file that does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxProblem {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// What the parser expected.
    pub message: String,
}

/// Why a file could not be linted: the run's exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum LintError {
    /// The file could not be read (missing, a directory, not UTF-8, no permission).
    #[error(
        "{}: cannot read: {source} (fix: check the path and its permissions; lint takes Nix files)",
        path.display()
    )]
    Read {
        /// The file as it was named.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid Nix. Only the first syntax error is reported, as
    /// `nix-instantiate --parse` does: the parser's later errors mostly follow from it.
    #[error(
        "{}:{}:{}: syntax error: {} (fix: correct the Nix syntax here; `nix-instantiate --parse` shows the same place)",
        path.display(),
        problem.line,
        problem.column,
        problem.message
    )]
    Syntax {
        /// The file as it was named.
        path: PathBuf,
        /// The first error, in source order.
        problem: SyntaxProblem,
    },
}

/// Lints Nix source text; `path` only names the file in findings and errors.
///
/// Findings are sorted by position. A file with a syntax error gives
/// [`LintError::Syntax`] and no findings: rules over a broken tree would guess.
pub fn lint_source(path: &Path, source: &str) -> Result<Vec<Finding>, LintError> {
    let lines = LineIndex::new(source);
    let parse = rnix::Root::parse(source);
    if let Some(problem) = parse
        .errors()
        .iter()
        .map(|e| syntax_problem(e, source, &lines))
        .min_by_key(|p| (p.line, p.column))
    {
        return Err(LintError::Syntax {
            path: path.to_path_buf(),
            problem,
        });
    }
    let root = parse.tree();
    let definitions = defs::collect(&root);
    let mut raw = rules::check(&root, &definitions);
    raw.sort_by_key(|r| (r.at, r.pitfall));
    raw.dedup_by_key(|r| (r.at, r.pitfall));
    Ok(raw
        .into_iter()
        .map(|r| {
            let (line, column) = lines.position(source, r.at);
            Finding {
                file: path.to_path_buf(),
                line,
                column,
                pitfall: r.pitfall,
                severity: r.severity,
                problem: r.problem,
                fix: r.fix,
            }
        })
        .collect())
}

/// Reads and lints one file.
pub fn lint_file(path: &Path) -> Result<Vec<Finding>, LintError> {
    let source = std::fs::read_to_string(path).map_err(|source| LintError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    lint_source(path, &source)
}

/// The outcome of linting several files: every finding and every file that failed.
#[derive(Debug, Default)]
pub struct LintReport {
    /// Findings, file by file in the order given, each file's sorted by position.
    pub findings: Vec<Finding>,
    /// Files that could not be read or parsed.
    pub errors: Vec<LintError>,
    /// How many files were given.
    pub files: usize,
}

impl LintReport {
    /// As `cdi-harness run`: 2 when a file could not be read or parsed (the lint could not
    /// do its job), else 1 when a pitfall (warnings included) was found, else 0.
    pub fn exit_code(&self) -> u8 {
        if !self.errors.is_empty() {
            2
        } else if !self.findings.is_empty() {
            1
        } else {
            0
        }
    }

    /// A one-line summary for the end of the output.
    pub fn summary(&self) -> String {
        let warnings = self
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Warning)
            .count();
        let mut s = format!(
            "{} pitfall(s) ({warnings} warning(s)) in {} file(s)",
            self.findings.len(),
            self.files
        );
        if !self.errors.is_empty() {
            s.push_str(&format!(
                "; {} file(s) could not be linted",
                self.errors.len()
            ));
        }
        s
    }
}

/// Lints every file, going on past files that fail so one run reports everything.
pub fn lint_paths<P: AsRef<Path>>(paths: &[P]) -> LintReport {
    let mut report = LintReport {
        files: paths.len(),
        ..LintReport::default()
    };
    for path in paths {
        match lint_file(path.as_ref()) {
            Ok(findings) => report.findings.extend(findings),
            Err(e) => report.errors.push(e),
        }
    }
    report
}

/// Byte offsets to 1-based lines and character columns.
struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    fn new(source: &str) -> Self {
        let starts = std::iter::once(0)
            .chain(source.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        LineIndex { starts }
    }

    fn position(&self, source: &str, at: TextSize) -> (usize, usize) {
        let offset = usize::from(at).min(source.len());
        let line = self.starts.partition_point(|&s| s <= offset).max(1);
        let start = self.starts.get(line - 1).copied().unwrap_or(0);
        let column = source
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count());
        (line, column + 1)
    }
}

fn syntax_problem(error: &ParseError, source: &str, lines: &LineIndex) -> SyntaxProblem {
    let end = TextSize::try_from(source.len()).unwrap_or_default();
    let snippet = |range: &TextRange| {
        // The first token the range covers: `=`, not `= true;\n  foo`.
        let text = source
            .get(usize::from(range.start())..usize::from(range.end()))
            .unwrap_or_default()
            .trim_start();
        let short: String = text
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .chars()
            .take(30)
            .collect();
        if short.is_empty() {
            "end of file".to_string()
        } else {
            format!("`{short}`")
        }
    };
    let (at, message) = match error {
        ParseError::Unexpected(range) => (range.start(), format!("unexpected {}", snippet(range))),
        ParseError::UnexpectedExtra(range) => (
            range.start(),
            format!(
                "unexpected {} after the end of the expression",
                snippet(range)
            ),
        ),
        ParseError::UnexpectedWanted(_, range, wanted) => {
            let hint = if wanted.contains(&SyntaxKind::TOKEN_SEMICOLON) {
                " (a `;` missing at the end of the binding before shows up here)"
            } else {
                ""
            };
            (
                range.start(),
                format!(
                    "unexpected {}, expected {}{hint}",
                    snippet(range),
                    expected(wanted)
                ),
            )
        }
        ParseError::UnexpectedDoubleBind(range) => {
            (range.start(), "a pattern is bound twice".to_string())
        }
        ParseError::UnexpectedEOF => (end, "unexpected end of file".to_string()),
        ParseError::UnexpectedEOFWanted(wanted) => (
            end,
            format!("unexpected end of file, expected {}", expected(wanted)),
        ),
        ParseError::DuplicatedArgs(range, name) => {
            (range.start(), format!("argument `{name}` is duplicated"))
        }
        ParseError::RecursionLimitExceeded => (end, "nesting too deep to parse".to_string()),
        other => (end, other.to_string()),
    };
    let (line, column) = lines.position(source, at);
    SyntaxProblem {
        line,
        column,
        message,
    }
}

/// `` `;` or `}` `` for the tokens a parser wanted.
fn expected(kinds: &[SyntaxKind]) -> String {
    let mut names: Vec<String> = kinds.iter().map(|k| kind_name(*k)).collect();
    names.dedup();
    names.join(" or ")
}

fn kind_name(kind: SyntaxKind) -> String {
    use SyntaxKind::*;
    let text = match kind {
        TOKEN_SEMICOLON => "`;`",
        TOKEN_ASSIGN => "`=`",
        TOKEN_COLON => "`:`",
        TOKEN_COMMA => "`,`",
        TOKEN_DOT => "`.`",
        TOKEN_L_BRACE => "`{`",
        TOKEN_R_BRACE => "`}`",
        TOKEN_L_BRACK => "`[`",
        TOKEN_R_BRACK => "`]`",
        TOKEN_L_PAREN => "`(`",
        TOKEN_R_PAREN => "`)`",
        TOKEN_IN => "`in`",
        TOKEN_THEN => "`then`",
        TOKEN_ELSE => "`else`",
        TOKEN_ELLIPSIS => "`...`",
        TOKEN_QUESTION => "`?`",
        TOKEN_AT => "`@`",
        TOKEN_IDENT => "a name",
        TOKEN_STRING_START | NODE_STRING => "a string",
        TOKEN_STRING_END => "the end of the string",
        TOKEN_INTERPOL_END => "`}` closing `${`",
        TOKEN_REC => "`rec`",
        TOKEN_LET => "`let`",
        TOKEN_WITH => "`with`",
        TOKEN_IF => "`if`",
        TOKEN_ASSERT => "`assert`",
        TOKEN_INHERIT => "`inherit`",
        TOKEN_INVERT => "`!`",
        TOKEN_SUB => "`-`",
        TOKEN_INTEGER | TOKEN_FLOAT => "a number",
        TOKEN_PATH_ABS | TOKEN_PATH_REL | TOKEN_PATH_HOME | TOKEN_PATH_SEARCH => "a path",
        TOKEN_URI => "a URI",
        _ => return format!("{kind:?}"),
    };
    text.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_lines_and_character_columns() {
        let src = "a\n  bé c\n";
        let idx = LineIndex::new(src);
        assert_eq!(idx.position(src, TextSize::from(0)), (1, 1));
        assert_eq!(idx.position(src, TextSize::from(4)), (2, 3));
        // `c` is after a two-byte `é`: byte 8, character column 6.
        assert_eq!(idx.position(src, TextSize::from(8)), (2, 6));
        assert_eq!(idx.position(src, TextSize::from(10)), (3, 1));
    }

    #[test]
    fn a_finding_prints_as_file_line_col_problem_fix() {
        let f = Finding {
            file: PathBuf::from("m.nix"),
            line: 3,
            column: 5,
            pitfall: Pitfall::NoDriver,
            severity: Severity::Warning,
            problem: "p".into(),
            fix: "f".into(),
        };
        assert_eq!(f.to_string(), "m.nix:3:5: warning: p (fix: f)");
        let f = Finding {
            severity: Severity::Error,
            ..f
        };
        assert_eq!(f.to_string(), "m.nix:3:5: p (fix: f)");
    }
}
