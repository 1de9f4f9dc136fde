//! Putting an instance back to its backup: EC2's replace-root-volume task
//! (`CreateReplaceRootVolumeTask` with the AMI prepatch made), as the cloud
//! answers it and as `rollback` asks for it.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::{AmiId, Environment, InstanceId, TagMap, Target};

/// A replace-root-volume task's state, as EC2 names it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RootTaskState {
    Pending,
    InProgress,
    /// Failing: on its way to `failed`.
    Failing,
    Succeeded,
    Failed,
    /// Failed, and the original root volume could not be attached again:
    /// the instance has no root volume until someone attaches one.
    FailedDetached,
    /// A state this version of prepatch does not know.
    Other(String),
}

impl RootTaskState {
    pub fn parse(s: &str) -> RootTaskState {
        match s {
            "pending" => RootTaskState::Pending,
            "in-progress" => RootTaskState::InProgress,
            "failing" => RootTaskState::Failing,
            "succeeded" => RootTaskState::Succeeded,
            "failed" => RootTaskState::Failed,
            "failed-detached" => RootTaskState::FailedDetached,
            other => RootTaskState::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            RootTaskState::Pending => "pending",
            RootTaskState::InProgress => "in-progress",
            RootTaskState::Failing => "failing",
            RootTaskState::Succeeded => "succeeded",
            RootTaskState::Failed => "failed",
            RootTaskState::FailedDetached => "failed-detached",
            RootTaskState::Other(s) => s,
        }
    }

    /// It will not change any more.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            RootTaskState::Succeeded | RootTaskState::Failed | RootTaskState::FailedDetached
        )
    }
}

impl fmt::Display for RootTaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One replace-root-volume task, as `DescribeReplaceRootVolumeTasks` (or
/// the `CreateReplaceRootVolumeTask` that made it) gives it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RootTask {
    pub id: String,
    pub instance: InstanceId,
    /// The AMI the new root volume is restored from, if it was one.
    pub image: Option<AmiId>,
    pub state: RootTaskState,
    /// As EC2 gives them (ISO 8601 text).
    pub started_at: Option<String>,
    pub completed_at: Option<String>,
    pub tags: TagMap,
}

/// A `CreateReplaceRootVolumeTask` from an AMI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootTaskRequest {
    pub instance: InstanceId,
    pub image: AmiId,
    /// Makes the call idempotent on AWS's side: the same token for the same
    /// request gives the task made the first time, not a second one.
    pub client_token: String,
    /// Delete the replaced root volume once the task succeeds (else it is
    /// kept, detached, for the operator to look at or delete).
    pub delete_replaced: bool,
    /// Applied to the task in the same call.
    pub tags: TagMap,
}

/// The client token of a task with these parameters, after
/// `failed_before` failed tasks of the same rollback: every parameter the
/// request carries goes into it (the instance, the AMI, whether the
/// replaced volume is deleted, the tags, which name the run), so the same
/// request always gives the same token and a rollback run again (after a
/// crash, a Ctrl-C, a lost answer) is given the task it already made,
/// while a request that differs in anything gets a token of its own and
/// never meets `IdempotentParameterMismatch` (EC2 API reference, "Ensuring
/// idempotency": a token reused with other parameters is refused). One run
/// again after a failed task tries anew. EC2 allows 64 ASCII characters: a
/// hash, hex.
pub fn client_token(
    instance: &InstanceId,
    image: &AmiId,
    delete_replaced: bool,
    tags: &TagMap,
    failed_before: usize,
) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(format!(
        "prepatch-rollback-2\n{instance}\n{image}\n{delete_replaced}\n{failed_before}\n"
    ));
    for (k, v) in tags.iter() {
        h.update(format!("{}:{k}={}:{v}\n", k.len(), v.len()));
    }
    let digest = h.finalize();
    let hex: String = digest[..24].iter().map(|b| format!("{b:02x}")).collect();
    format!("prepatch-{hex}")
}

/// What rollback did (or would do) with one instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// The plan, or a dry run: its root volume would be replaced.
    WouldRollBack,
    /// Its root volume was replaced by one from its backup.
    RolledBack,
    /// Not rolled back: the backup is not usable, not this run's, or the
    /// instance is not there (see the reason).
    Refused,
    /// Stopped, and `--start` was not given: reported, not started.
    Stopped,
    /// The task was asked and failed, or never finished in time.
    Failed,
    /// Not done: interrupted before its task was asked for, or while it ran.
    NotDone,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::WouldRollBack => "would-roll-back",
            Action::RolledBack => "rolled-back",
            Action::Refused => "refused",
            Action::Stopped => "stopped",
            Action::Failed => "failed",
            Action::NotDone => "not-done",
        }
    }
}

/// How an instance stands after its rollback: checked as validation
/// checks (running, status checks, SSM agent Online).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Verdict {
    #[serde(rename = "READY")]
    Ready,
    #[serde(rename = "NOT READY")]
    NotReady,
    /// Not checked: nothing was rolled back.
    #[serde(rename = "")]
    None,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ready => "READY",
            Verdict::NotReady => "NOT READY",
            Verdict::None => "",
        }
    }
}

/// One instance in the rollback report.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub landing_zone: String,
    pub account: String,
    pub region: String,
    pub environment: Environment,
    pub instance_id: String,
    pub name: String,
    /// The backup the root volume comes back from.
    pub ami: String,
    pub action: Action,
    pub task_id: String,
    pub task_state: String,
    pub task_started_at: String,
    pub task_completed_at: String,
    /// After the rollback: the instance's state, its status checks
    /// (`instance/system`), its SSM agent.
    pub state: String,
    pub status_checks: String,
    pub ssm: String,
    pub verdict: Verdict,
    pub reason: String,
    /// The AMI's data-volume snapshots: a rollback replaces the root
    /// volume only; these are what an operator restores the rest from.
    pub data_snapshots: Vec<String>,
}

/// A target's instances as rollback sees them.
#[derive(Clone, Debug)]
pub struct TargetPlan {
    pub target: Target,
    pub environment: Environment,
    pub rows: Vec<Row>,
    /// Why the target could not be looked at, if it could not.
    pub error: Option<String>,
}

/// Counts by action, and by verdict.
pub fn counts(plans: &[TargetPlan]) -> (BTreeMap<Action, usize>, BTreeMap<Verdict, usize>) {
    let (mut a, mut v) = (BTreeMap::new(), BTreeMap::new());
    for r in plans.iter().flat_map(|p| &p.rows) {
        *a.entry(r.action).or_insert(0) += 1;
        *v.entry(r.verdict).or_insert(0) += 1;
    }
    (a, v)
}

/// The one-line summary, as printed and journaled. `applied`: tasks were
/// asked for (else it is the plan, or a dry run).
pub fn summary_line(plans: &[TargetPlan], applied: bool) -> String {
    let (a, v) = counts(plans);
    let n = |x: Action| a.get(&x).copied().unwrap_or(0);
    let errors = plans.iter().filter(|p| p.error.is_some()).count();
    if applied {
        format!(
            "rolled back {} ({} READY, {} NOT READY), failed {}, refused {}, stopped {}, not done {}, account-regions failed {errors}",
            n(Action::RolledBack),
            v.get(&Verdict::Ready).copied().unwrap_or(0),
            v.get(&Verdict::NotReady).copied().unwrap_or(0),
            n(Action::Failed),
            n(Action::Refused),
            n(Action::Stopped),
            n(Action::NotDone),
        )
    } else {
        format!(
            "plan: would roll back {}, rolled back already {}, refused {}, stopped {}, account-regions failed {errors}; nothing changed",
            n(Action::WouldRollBack),
            n(Action::RolledBack),
            n(Action::Refused),
            n(Action::Stopped),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_token_covers_every_parameter_of_the_task_and_fits_ec2() {
        let (i, a) = (InstanceId::new("i-1"), AmiId::new("ami-1"));
        let tags = |run: &str| -> TagMap {
            [("prepatch:rollback-of".to_owned(), run.to_owned())]
                .into_iter()
                .collect()
        };
        let t = client_token(&i, &a, false, &tags("run-1"), 0);
        assert_eq!(t, client_token(&i, &a, false, &tags("run-1"), 0));
        assert_ne!(
            t,
            client_token(&i, &a, false, &tags("run-2"), 0),
            "another run"
        );
        assert_ne!(
            t,
            client_token(&InstanceId::new("i-2"), &a, false, &tags("run-1"), 0)
        );
        assert_ne!(
            t,
            client_token(&i, &AmiId::new("ami-2"), false, &tags("run-1"), 0)
        );
        assert_ne!(
            t,
            client_token(&i, &a, true, &tags("run-1"), 0),
            "--delete-replaced-volume is a parameter of the task"
        );
        assert_ne!(
            t,
            client_token(&i, &a, false, &tags("run-1"), 1),
            "a new try after a failure"
        );
        assert!(t.len() <= 64 && t.is_ascii(), "{t}");
    }

    #[test]
    fn states_read_as_ec2_writes_them() {
        for s in [
            "pending",
            "in-progress",
            "failing",
            "succeeded",
            "failed",
            "failed-detached",
        ] {
            assert_eq!(RootTaskState::parse(s).as_str(), s);
        }
        assert!(RootTaskState::parse("failed-detached").is_final());
        assert!(!RootTaskState::parse("failing").is_final());
        assert_eq!(
            RootTaskState::parse("new"),
            RootTaskState::Other("new".into())
        );
    }
}
