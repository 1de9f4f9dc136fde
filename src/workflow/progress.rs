//! Progress on a terminal: a bar per account-region and phase (indicatif,
//! on stderr, in the process's one display: [`crate::console`], which
//! prints the log lines above them). Off a terminal, or with `--quiet`,
//! nothing is drawn and the log lines say the same.

use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::console::display;

use crate::model::Phase;
use crate::model::Target;

#[derive(Clone)]
pub struct Progress {
    multi: Option<&'static MultiProgress>,
}

impl Progress {
    pub fn new(enabled: bool) -> Self {
        Progress {
            multi: enabled.then(display).filter(|d| !d.is_hidden()),
        }
    }

    pub fn hidden() -> Self {
        Progress { multi: None }
    }

    /// A bar counting `len` instances of a target through a phase.
    pub fn bar(&self, phase: Phase, target: &Target, len: u64) -> Bar {
        let Some(multi) = self.multi else {
            return Bar(None);
        };
        let style =
            ProgressStyle::with_template("{prefix:>32} {bar:30.cyan/blue} {pos:>5}/{len:5} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
        let bar = multi.add(ProgressBar::new(len).with_style(style));
        crate::console::bar_added();
        bar.set_prefix(format!("{:<12} {}", phase.name(), target));
        Bar(Some(bar))
    }
}

/// The bar's width in columns, drawn and printed.
const BAR_WIDTH: usize = 30;

pub struct Bar(Option<ProgressBar>);

impl Bar {
    pub fn inc(&self, n: u64) {
        if let Some(b) = &self.0 {
            b.inc(n);
        }
    }

    pub fn set_length(&self, len: u64) {
        if let Some(b) = &self.0 {
            b.set_length(len);
        }
    }

    pub fn message(&self, msg: impl Into<String>) {
        if let Some(b) = &self.0 {
            b.set_message(msg.into());
        }
    }

    /// "waiting for 5 AMIs, 2m10s": what a wait waits for, and how long.
    pub fn waiting(&self, what: &str, waited: Duration) {
        if self.0.is_some() {
            self.message(format!("waiting for {what}, {}", short_duration(waited)));
        }
    }

    /// Ends the bar: it leaves the live display, and its last state is
    /// printed once above it, as a log line is. The display then holds
    /// only the bars still moving, however many account-regions a run
    /// has (a display taller than the terminal is drawn over its own
    /// scrollback), and a finished bar is never drawn again.
    pub fn finish(&self, msg: impl Into<String>) {
        let Some(b) = &self.0 else {
            return;
        };
        let msg = msg.into();
        let (pos, len) = (b.position(), b.length().unwrap_or(0));
        let filled = match len {
            0 => BAR_WIDTH,
            _ => (BAR_WIDTH as u64 * pos.min(len) / len) as usize,
        };
        let line = format!(
            "{:>32} {}{} {pos:>5}/{len:<5} {msg}",
            b.prefix(),
            "=".repeat(filled),
            " ".repeat(BAR_WIDTH - filled),
        );
        b.finish_and_clear();
        display().remove(b);
        crate::console::print_above(&line);
    }
}

/// `1 AMI`, `5 AMIs`.
pub fn plural(n: usize, what: &str) -> String {
    match n {
        1 => format!("1 {what}"),
        _ => format!("{n} {what}s"),
    }
}

/// `45s`, `2m10s`, `1h05m`.
pub fn short_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_short() {
        let d = |s| short_duration(Duration::from_secs(s));
        assert_eq!(
            [d(0), d(45), d(130), d(3900)],
            ["0s", "45s", "2m10s", "1h05m"]
        );
    }
}
