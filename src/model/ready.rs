//! What "ready" means, once: validation's verdicts and rollback's checks
//! after a root volume is replaced both judge an instance by these rules.
//!
//! Ready is running, EC2's two status checks passing, and the SSM agent
//! Online. EC2 answers `not-applicable` for a check it does not run (an
//! instance type or state without that check), which is not a failure
//! (EC2 user guide, "Status checks for Amazon EC2 instances").

use super::{InstanceState, SsmPing, StatusChecks};

/// One reason an instance is not ready, and whether another look later
/// could find it gone (a pending state, checks still initializing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub reason: String,
    pub transient: bool,
}

impl Problem {
    fn new(reason: String, transient: bool) -> Problem {
        Problem { reason, transient }
    }
}

/// The instance's state, against readiness.
pub fn state_problem(state: InstanceState) -> Option<Problem> {
    match state {
        InstanceState::Running => None,
        InstanceState::Unknown => Some(Problem::new(
            "state: unknown (DescribeInstances failed)".into(),
            true,
        )),
        s => Some(Problem::new(
            format!("state: {s} (expected running)"),
            s == InstanceState::Pending,
        )),
    }
}

/// EC2's status checks of a running instance, against readiness: one
/// problem for each check that is neither `ok` nor `not-applicable`;
/// `initializing` and `insufficient-data` may still pass.
pub fn status_problems(checks: Option<&StatusChecks>) -> Vec<Problem> {
    let Some(s) = checks else {
        return vec![Problem::new("status-check: no data".into(), true)];
    };
    [
        ("instance", &s.instance_status),
        ("system", &s.system_status),
    ]
    .into_iter()
    .filter_map(|(what, value)| match value.as_str() {
        "ok" | "not-applicable" => None,
        "initializing" | "insufficient-data" => {
            Some(Problem::new(format!("status-check: {what} {value}"), true))
        }
        _ => Some(Problem::new(format!("status-check: {what} {value}"), false)),
    })
    .collect()
}

/// The SSM agent's ping, against readiness (whether waiting may change it
/// is the caller's to say: an agent registers a while after a start).
pub fn ssm_ready(ping: &SsmPing) -> bool {
    *ping == SsmPing::Online
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::InstanceId;

    fn checks(instance: &str, system: &str) -> StatusChecks {
        StatusChecks {
            id: InstanceId::new("i-1"),
            state: InstanceState::Running,
            instance_status: instance.into(),
            system_status: system.into(),
        }
    }

    #[test]
    fn not_applicable_checks_pass_and_impaired_ones_do_not() {
        assert!(status_problems(Some(&checks("ok", "ok"))).is_empty());
        assert!(status_problems(Some(&checks("not-applicable", "ok"))).is_empty());
        let impaired = status_problems(Some(&checks("impaired", "ok")));
        assert_eq!(impaired.len(), 1);
        assert!(!impaired[0].transient);
        let init = status_problems(Some(&checks("initializing", "initializing")));
        assert!(init.len() == 2 && init.iter().all(|p| p.transient));
        assert!(status_problems(None)[0].transient, "no data yet");
    }

    #[test]
    fn only_running_is_ready_and_pending_may_become_it() {
        assert_eq!(state_problem(InstanceState::Running), None);
        assert!(state_problem(InstanceState::Pending).unwrap().transient);
        assert!(!state_problem(InstanceState::Stopped).unwrap().transient);
    }
}
