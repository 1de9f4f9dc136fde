//! What `restore` found and did, instance by instance: what its plan,
//! its summary and its reports are made of.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{Environment, Target};

/// What restore did (or would do) with one instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Dry run: it would be stopped.
    WouldStop,
    Stopped,
    /// Stopped already (by someone, or an earlier restore); its tag removed.
    AlreadyStopped,
    /// Not this run's to stop: see the reason.
    LeftAlone,
    /// The stop was asked and failed, or it did not reach `stopped`.
    Failed,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::WouldStop => "would-stop",
            Action::Stopped => "stopped",
            Action::AlreadyStopped => "already-stopped",
            Action::LeftAlone => "left-alone",
            Action::Failed => "failed",
        }
    }
}

/// One instance in the restore report.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub landing_zone: String,
    pub account: String,
    pub region: String,
    pub environment: Environment,
    pub instance_id: String,
    pub name: String,
    pub action: Action,
    pub state_before: String,
    pub state_after: String,
    pub in_journal: bool,
    pub tag: String,
    pub tag_removed: bool,
    pub reason: String,
}

/// A target's instances as restore sees them.
#[derive(Clone, Debug)]
pub struct TargetPlan {
    pub target: Target,
    pub environment: Environment,
    pub rows: Vec<Row>,
    /// Why the target could not be looked at, if it could not.
    pub error: Option<String>,
}

/// Counts by action.
pub fn counts(plans: &[TargetPlan]) -> BTreeMap<Action, usize> {
    let mut c = BTreeMap::new();
    for r in plans.iter().flat_map(|p| &p.rows) {
        *c.entry(r.action).or_insert(0) += 1;
    }
    c
}

/// The one-line summary, as printed and journaled.
pub fn summary_line(plans: &[TargetPlan], dry_run: bool) -> String {
    let c = counts(plans);
    let n = |a: Action| c.get(&a).copied().unwrap_or(0);
    let errors = plans.iter().filter(|p| p.error.is_some()).count();
    if dry_run {
        format!(
            "dry run: would stop {}, already stopped {}, left alone {}, account-regions failed {errors}",
            n(Action::WouldStop),
            n(Action::AlreadyStopped),
            n(Action::LeftAlone)
        )
    } else {
        format!(
            "stopped {}, already stopped {}, left alone {}, failed {}, account-regions failed {errors}",
            n(Action::Stopped),
            n(Action::AlreadyStopped),
            n(Action::LeftAlone),
            n(Action::Failed)
        )
    }
}
