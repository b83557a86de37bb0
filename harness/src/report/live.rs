//! The live view of a run on a terminal: one spinner per scenario saying what it is busy
//! with (its engine starting, the image importing, the engine restarting), above the
//! per-check progress lines; indicatif draws it.
//!
//! Why its own module: the per-check lines must go through the same terminal writer as
//! the spinners, or they would tear each other apart; and when stderr is not a terminal
//! (CI logs, a pipe) there are no spinners at all, only the lines, unchanged.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::runner::Phase;

/// How often a spinner moves while nothing else changes.
const TICK: Duration = Duration::from_millis(120);

/// The spinners of the scenarios under way and the lines printed between them.
pub struct LiveView {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl LiveView {
    /// A view on stderr; hidden (lines only) when stderr is not a terminal, when the
    /// terminal says it cannot move the cursor (`TERM=dumb`: some CI systems give a
    /// terminal whose log would fill with redraws), or when `spinners` is false.
    pub fn stderr(spinners: bool) -> LiveView {
        let dumb = std::env::var_os("TERM").is_some_and(|t| t == "dumb");
        let target = if spinners && !dumb {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        LiveView {
            multi: MultiProgress::with_draw_target(target),
            bars: Mutex::new(HashMap::new()),
        }
    }

    /// Whether spinners are drawn at all.
    pub fn is_hidden(&self) -> bool {
        self.multi.is_hidden()
    }

    /// Prints a line above the spinners (or plainly on stderr when they are hidden).
    pub fn line(&self, text: &str) {
        if self.multi.is_hidden() || self.multi.println(text).is_err() {
            eprintln!("{text}");
        }
    }

    /// `scenario` entered `phase`: its spinner says so; [`Phase::Finished`] removes it.
    pub fn phase(&self, scenario: &str, phase: Phase) {
        if self.multi.is_hidden() {
            return;
        }
        let Ok(mut bars) = self.bars.lock() else {
            return;
        };
        if phase == Phase::Finished {
            if let Some(bar) = bars.remove(scenario) {
                bar.finish_and_clear();
                self.multi.remove(&bar);
            }
            return;
        }
        let bar = bars.entry(scenario.to_string()).or_insert_with(|| {
            let bar = self.multi.add(ProgressBar::new_spinner());
            bar.set_style(
                ProgressStyle::with_template("{spinner} {elapsed:>3} {prefix}: {wide_msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_prefix(scenario.to_string());
            bar.enable_steady_tick(TICK);
            bar
        });
        bar.set_message(phase.describe());
    }

    /// Removes whatever spinners are left (an interrupted run).
    pub fn clear(&self) {
        if let Ok(mut bars) = self.bars.lock() {
            for (_, bar) in bars.drain() {
                bar.finish_and_clear();
            }
        }
        let _ = self.multi.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hidden_view_keeps_no_spinners() {
        let view = LiveView::stderr(false);
        assert!(view.is_hidden());
        view.phase("seed", Phase::Preparing);
        assert!(view.bars.lock().unwrap().is_empty());
    }

    #[test]
    fn a_drawn_view_has_a_spinner_per_scenario_until_it_finishes() {
        // A terminal-less target that still counts as drawn: what the view keeps is
        // tested, not the terminal's bytes.
        let view = LiveView {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::term_like(Box::new(
                indicatif::InMemoryTerm::new(10, 80),
            ))),
            bars: Mutex::new(HashMap::new()),
        };
        assert!(!view.is_hidden());
        view.phase("seed", Phase::Preparing);
        view.phase("multi-gpu", Phase::ImportingImage);
        view.phase("seed", Phase::RestartingEngine);
        {
            let bars = view.bars.lock().unwrap();
            assert_eq!(bars.len(), 2);
            assert_eq!(bars["seed"].message(), Phase::RestartingEngine.describe());
        }
        view.phase("seed", Phase::Finished);
        assert_eq!(view.bars.lock().unwrap().len(), 1);
        view.clear();
        assert!(view.bars.lock().unwrap().is_empty());
    }
}
