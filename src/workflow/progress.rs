//! Progress on a terminal: a bar per account-region and phase (indicatif,
//! on stderr). Off a terminal, or with `--quiet`, nothing is drawn and the
//! log lines say the same.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::model::Phase;
use crate::model::Target;

#[derive(Clone)]
pub struct Progress {
    multi: Option<MultiProgress>,
}

impl Progress {
    pub fn new(enabled: bool) -> Self {
        Progress {
            multi: enabled.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
        }
    }

    pub fn hidden() -> Self {
        Progress { multi: None }
    }

    /// A bar counting `len` instances of a target through a phase.
    pub fn bar(&self, phase: Phase, target: &Target, len: u64) -> Bar {
        let Some(multi) = &self.multi else {
            return Bar(None);
        };
        let style =
            ProgressStyle::with_template("{prefix:>32} {bar:30.cyan/blue} {pos:>5}/{len:5} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
        let bar = multi.add(ProgressBar::new(len).with_style(style));
        bar.set_prefix(format!("{:<12} {}", phase.name(), target));
        Bar(Some(bar))
    }
}

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

    pub fn finish(&self, msg: impl Into<String>) {
        if let Some(b) = &self.0 {
            b.finish_with_message(msg.into());
        }
    }
}
