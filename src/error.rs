//! The top-level error and the exit codes, chosen in one place.
//!
//! | code | meaning |
//! |------|---------|
//! | 0    | everything done, every instance READY |
//! | 1    | finished, but a landing zone, target or instance failed |
//! | 2    | usage or config error, or a refused confirmation: nothing changed |
//! | 130  | interrupted (Ctrl-C): work in flight finished, reports written |

use std::process::ExitCode;

use crate::config::ConfigError;

pub const EXIT_OK: u8 = 0;
pub const EXIT_FAILURES: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_INTERRUPTED: u8 = 130;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A flag or a landing zone name that cannot be acted on.
    #[error("{0}")]
    Usage(String),
    /// The production guard said no.
    #[error("refused: {0}")]
    Refused(String),
    /// The run journal cannot be used.
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
    /// The organization's accounts could not be read (`organizations:`):
    /// nothing was done.
    #[error("organizations: {0}; nothing was changed")]
    Organizations(String),
    /// Reports could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

impl Error {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Error::Write { .. } | Error::Organizations(_) => ExitCode::from(EXIT_FAILURES),
            _ => ExitCode::from(EXIT_USAGE),
        }
    }
}

/// How a run ended, for the exit code.
#[derive(Debug, Default)]
pub struct Outcome {
    pub failures: bool,
    pub interrupted: bool,
}

impl Outcome {
    /// 130 interrupted, 1 failures, 0 all well.
    pub fn code(&self) -> u8 {
        if self.interrupted {
            EXIT_INTERRUPTED
        } else if self.failures {
            EXIT_FAILURES
        } else {
            EXIT_OK
        }
    }

    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.code())
    }
}
