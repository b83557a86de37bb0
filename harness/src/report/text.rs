//! Text helpers the renderers share.

#[allow(unused_imports)]
use super::*;

/// Short human durations, `0.21s`, `12.3s`, `2m05s`: of steady width for the table's
/// TIME column.
/// Kept by hand on purpose: humantime (a dependency) writes `210ms` or `12s 345ms`,
/// which is exact but ragged in a column and noisy at a glance.
pub(super) fn format_duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 10.0 {
        format!("{secs:.2}s")
    } else if secs < 60.0 {
        format!("{secs:.1}s")
    } else {
        let whole = d.as_secs();
        format!("{}m{:02}s", whole / 60, whole % 60)
    }
}

pub(super) fn first_line(s: &str) -> &str {
    s.trim_start().lines().next().unwrap_or("").trim_end()
}

pub(super) fn non_empty<'a>(s: &'a str, fallback: &'a str) -> &'a str {
    if s.trim().is_empty() { fallback } else { s }
}

/// Makes text safe for one terminal or table line: tabs and line breaks become spaces and
/// other control characters (stray ANSI escapes from container output) are dropped, so a
/// message cannot break the layout or recolour the terminal.
pub(super) fn clean(s: &str) -> String {
    s.chars()
        .filter_map(|c| match c {
            '\t' | '\n' | '\r' => Some(' '),
            c if c.is_control() => None,
            c => Some(c),
        })
        .collect()
}

pub(super) fn chars(s: &str) -> usize {
    s.chars().count()
}

/// Cuts `s` to at most `max` chars, marking the cut with '…'.
pub(super) fn truncate(s: &str, max: usize) -> String {
    if chars(s) <= max {
        return s.to_owned();
    }
    if max == 0 {
        return String::new();
    }
    let mut out: String = s.chars().take(max - 1).collect();
    out.push('…');
    out
}
