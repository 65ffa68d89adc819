//! Progress display for large legacy files: a spinner while a file over 5 MB is
//! parsed, a bar while more than 10,000 records are converted, a spinner while
//! the one import transaction commits. Drawn on stderr only when it is a
//! terminal, so logs and pipes stay clean.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Files with more records than this get a progress bar.
pub(crate) const LARGE_RECORD_COUNT: usize = 10_000;

/// Where progress goes: stderr when it is a terminal, nowhere otherwise.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Progress {
    visible: bool,
}

impl Progress {
    /// Visible when `wanted` and stderr is a terminal.
    pub(crate) fn new(wanted: bool) -> Self {
        Progress {
            visible: wanted && std::io::stderr().is_terminal(),
        }
    }

    fn target(&self) -> ProgressDrawTarget {
        if self.visible {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        }
    }

    /// A spinner with a message; finish it with `finish_and_clear`.
    pub(crate) fn spinner(&self, message: String) -> ProgressBar {
        let bar = ProgressBar::with_draw_target(None, self.target());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_message(message);
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    }

    /// A bar over `len` records, or a hidden one when `len` is small.
    pub(crate) fn records(&self, what: &str, len: usize) -> ProgressBar {
        if len <= LARGE_RECORD_COUNT {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::with_draw_target(Some(len as u64), self.target());
        bar.set_style(
            ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({eta})")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_message(what.to_string());
        bar
    }
}
