//! A run's record: the phases, what each found and did, the events. The
//! workflow fills it in; the journal saves it; the reports are made from it.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::api::{Api, CallCount, Failure};
use super::{Environment, Record, RunId, Target};

/// The phases, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Scanner,
    AmiBackup,
    ServerStart,
    Validation,
}

impl Phase {
    pub const ALL: [Phase; 4] = [
        Phase::Scanner,
        Phase::AmiBackup,
        Phase::ServerStart,
        Phase::Validation,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Phase::Scanner => "scanner",
            Phase::AmiBackup => "ami-backup",
            Phase::ServerStart => "server-start",
            Phase::Validation => "validation",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether a phase runs, and if not, why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "status", content = "reason")]
pub enum Plan {
    Run,
    Skip(String),
}

/// One account-region and the instances found there.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TargetRun {
    pub target: Target,
    pub environment: Environment,
    /// The assumed role's ARN: who made the changes.
    pub identity: String,
    pub records: Vec<Record>,
    /// Why the target could not be scanned, if it could not.
    pub error: Option<Failure>,
    /// Why SSM's status could not be read by the scan, if it could not:
    /// the scan went on, each instance's agent `Unknown`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssm_error: Option<Failure>,
    /// When it went into each phase and came out (the dashboard's timeline).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spans: Vec<PhaseSpan>,
}

/// An account-region's time in one phase.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseSpan {
    pub phase: Phase,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

/// A landing zone that could not be worked on at all.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LandingZoneFailure {
    pub landing_zone: String,
    pub account: String,
    pub error: Failure,
}

/// A timestamped line of the execution log.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Event {
    pub at: DateTime<Utc>,
    pub phase: Phase,
    pub scope: String,
    pub message: String,
}

/// How one notification of the run's end went (`notifications:` in the
/// config). The URL is never kept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notified {
    pub name: String,
    pub format: String,
    pub event: String,
    pub delivered: bool,
    pub attempts: u32,
    /// Why it was not delivered (the last attempt's error).
    pub error: Option<String>,
}

impl fmt::Display for Notified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.error {
            None => write!(
                f,
                "{} ({}): sent ({} attempt{})",
                self.name,
                self.format,
                self.attempts,
                if self.attempts == 1 { "" } else { "s" }
            ),
            Some(e) => write!(
                f,
                "{} ({}): NOT SENT after {} attempt{}: {e}",
                self.name,
                self.format,
                self.attempts,
                if self.attempts == 1 { "" } else { "s" }
            ),
        }
    }
}

/// The account-region that spent longest in a phase.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Slowest {
    pub target: String,
    pub seconds: f64,
}

/// How a phase went.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PhaseSummary {
    pub phase: Phase,
    pub plan: Plan,
    pub done: usize,
    pub failed: usize,
    pub skipped: usize,
    /// From the first account-region into the phase to the last one out:
    /// account-regions go through the phases each at its own pace, so
    /// phases overlap and their times add up to more than the run's.
    pub seconds: f64,
    /// The account-region that spent longest in the phase, and how long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slowest: Option<Slowest>,
    pub api_calls: BTreeMap<Api, CallCount>,
}

/// Everything a run did and found; the reports are made from this.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Run {
    pub id: RunId,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub dry_run: bool,
    pub simulated: bool,
    pub interrupted: bool,
    pub landing_zones: Vec<String>,
    pub targets: Vec<TargetRun>,
    pub landing_zone_failures: Vec<LandingZoneFailure>,
    pub phases: Vec<PhaseSummary>,
    pub events: Vec<Event>,
    /// A dry run's answers to EC2's `DryRun` permission checks.
    pub permission_checks: Vec<PermissionCheck>,
    /// How the notifications of its end went.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notifications: Vec<Notified>,
}

impl Run {
    /// How it ended, in the reports' word: `interrupted`, `failures`, `ok`.
    pub fn outcome(&self) -> &'static str {
        if self.interrupted {
            "interrupted"
        } else if self.has_failures() {
            "failures"
        } else {
            "ok"
        }
    }

    pub fn records(&self) -> impl Iterator<Item = &Record> {
        self.targets.iter().flat_map(|t| t.records.iter())
    }

    pub fn instance_count(&self) -> usize {
        self.targets.iter().map(|t| t.records.len()).sum()
    }

    /// Anything failed or is not ready: the exit code is 1.
    pub fn has_failures(&self) -> bool {
        !self.landing_zone_failures.is_empty()
            || self.interrupted
            || self.targets.iter().any(|t| t.error.is_some())
            || self.phases.iter().any(|p| p.failed > 0)
            || self.permission_checks.iter().any(|c| !c.allowed)
            || self
                .records()
                .any(|r| r.verdict.as_ref().is_some_and(|v| !v.ready))
    }
}

/// The answer for one action in one account-region.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PermissionCheck {
    pub target: Target,
    /// The EC2 action, e.g. `CreateImage`.
    pub action: String,
    pub allowed: bool,
    /// AWS's refusal, or why the check could not be made.
    pub error: Option<Failure>,
}
