//! Every failure of a run as the reports list it: landing zones, targets,
//! refused permission checks and instances, with AWS's action, code and
//! request id as the failure kept them.

use crate::model::{Failure, PermissionCheck, Record};
use crate::model::{Phase, Run};

use super::*;

/// The report's permission checks, in the run's (target) order.
pub(super) fn permission_checks(run: &Run) -> Vec<PermissionCheckReport> {
    run.permission_checks
        .iter()
        .map(|c| PermissionCheckReport {
            landing_zone: c.target.landing_zone.clone(),
            account_id: c.target.account.to_string(),
            region: c.target.region.to_string(),
            action: c.action.clone(),
            allowed: c.allowed,
            error: c.error.as_ref().map(|f| f.message().to_owned()),
        })
        .collect()
}

/// A refused permission check as an account-region's error: the action
/// and code are AWS's, as the check met them.
pub(super) fn refusal(c: &PermissionCheck) -> ErrorReport {
    let failure = c.error.as_ref();
    let reason = failure.map_or("refused", |f| f.message());
    ErrorReport {
        scope: "target".to_owned(),
        phase: Phase::Scanner.name().to_owned(),
        landing_zone: c.target.landing_zone.clone(),
        account_id: c.target.account.to_string(),
        region: Some(c.target.region.to_string()),
        instance_id: None,
        api: Some(
            failure
                .and_then(|f| f.api())
                .map_or_else(|| c.action.clone(), |a| a.name().to_owned()),
        ),
        code: failure.and_then(|f| f.code()).map(str::to_owned),
        message: format!("ec2:{} (DryRun): {reason}", c.action),
        request_id: failure.and_then(|f| f.request_id()).map(str::to_owned),
    }
}

pub(super) fn error(
    scope: &str,
    phase: Phase,
    landing_zone: &str,
    account_id: &str,
    region: Option<&str>,
    instance_id: Option<&str>,
    failure: &Failure,
) -> ErrorReport {
    ErrorReport {
        scope: scope.to_owned(),
        phase: phase.name().to_owned(),
        landing_zone: landing_zone.to_owned(),
        account_id: account_id.to_owned(),
        region: region.map(str::to_owned),
        instance_id: instance_id.map(str::to_owned),
        api: failure.api().map(|a| a.name().to_owned()),
        code: failure.code().map(str::to_owned),
        message: failure.message().to_owned(),
        request_id: failure.request_id().map(str::to_owned),
    }
}

pub(super) fn errors(run: &Run, records: &[&Record]) -> Vec<ErrorReport> {
    let mut out = Vec::new();
    for f in &run.landing_zone_failures {
        out.push(error(
            "landing_zone",
            Phase::Scanner,
            &f.landing_zone,
            &f.account,
            None,
            None,
            &f.error,
        ));
    }
    let mut targets: Vec<_> = run.targets.iter().collect();
    targets.sort_by(|a, b| a.target.cmp(&b.target));
    for t in targets {
        if let Some(e) = &t.error {
            out.push(error(
                "target",
                Phase::Scanner,
                &t.target.landing_zone,
                t.target.account.as_str(),
                Some(t.target.region.as_str()),
                None,
                e,
            ));
        }
    }
    let mut refused: Vec<_> = run
        .permission_checks
        .iter()
        .filter(|c| !c.allowed)
        .collect();
    // By name, as the report lists them (an account id as text).
    refused.sort_by(|a, b| {
        let key = |c: &PermissionCheck| {
            let t = &c.target;
            (
                t.landing_zone.clone(),
                t.account.to_string(),
                t.region.to_string(),
            )
        };
        key(a).cmp(&key(b))
    });
    out.extend(refused.into_iter().map(refusal));
    for r in records {
        let at = |phase, failure: &Failure| {
            error(
                "instance",
                phase,
                &r.landing_zone,
                r.account.as_str(),
                Some(r.region.as_str()),
                Some(r.instance.id.as_str()),
                failure,
            )
        };
        if let Some(e) = r.backup.as_ref().and_then(|b| b.error.as_ref()) {
            out.push(at(Phase::AmiBackup, e));
        }
        if let Some(e) = r.start.as_ref().and_then(|s| s.error.as_ref()) {
            out.push(at(Phase::ServerStart, e));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::CloudError;
    use crate::model::Target;

    fn aws(api: Api, code: &str, message: &str, request_id: Option<&str>) -> Failure {
        let mut e = CloudError::new(api, crate::cloud::ErrorKind::Api, code, message);
        e.request_id = request_id.map(str::to_owned);
        Failure::from(e)
    }

    #[test]
    fn an_error_report_carries_the_failures_own_action_code_and_request_id() {
        let f = aws(
            Api::StartInstances,
            "InsufficientInstanceCapacity",
            "none left",
            Some("7e1f-22"),
        );
        let e = error(
            "instance",
            Phase::ServerStart,
            "lz",
            "111111111111",
            Some("eu-west-1"),
            Some("i-1"),
            &f,
        );
        assert_eq!(e.api.as_deref(), Some("StartInstances"));
        assert_eq!(e.code.as_deref(), Some("InsufficientInstanceCapacity"));
        assert_eq!(e.request_id.as_deref(), Some("7e1f-22"));
        assert_eq!(
            e.message,
            "StartInstances: InsufficientInstanceCapacity: none left (request id 7e1f-22)"
        );
        let none = Failure::new("no answer");
        let e = error("target", Phase::Scanner, "lz", "1", None, None, &none);
        assert_eq!((e.api, e.code, e.request_id), (None, None, None));
        // Every action is named, not only those a list of names knew.
        let f = aws(Api::DescribeImages, "Unavailable", "later", None)
            .context("cannot look up this run's AMIs, nothing backed up here");
        let e = error("target", Phase::AmiBackup, "lz", "1", None, None, &f);
        assert_eq!(e.api.as_deref(), Some("DescribeImages"));
    }

    #[test]
    fn a_refused_permission_is_an_error_of_its_account_region() {
        let check = |error: Failure| PermissionCheck {
            target: Target {
                landing_zone: "app-nonprod".into(),
                account: "111111111111".parse().unwrap(),
                region: "eu-west-1".parse().unwrap(),
            },
            action: "StartInstances".into(),
            allowed: false,
            error: Some(error),
        };
        let denied = aws(
            Api::StartInstances,
            "UnauthorizedOperation",
            "You are not authorized",
            Some("5-5"),
        )
        .worded("denied: UnauthorizedOperation: You are not authorized (request id 5-5)");
        let e = refusal(&check(denied));
        assert_eq!(e.scope, "target");
        assert_eq!(e.region.as_deref(), Some("eu-west-1"));
        assert_eq!(e.api.as_deref(), Some("StartInstances"));
        assert_eq!(e.code.as_deref(), Some("UnauthorizedOperation"));
        assert_eq!(e.request_id.as_deref(), Some("5-5"));
        assert_eq!(
            e.message,
            "ec2:StartInstances (DryRun): denied: UnauthorizedOperation: You are not authorized (request id 5-5)"
        );
        let e = refusal(&check(Failure::new("could not check: timed out")));
        assert_eq!(e.api.as_deref(), Some("StartInstances"));
        assert_eq!(e.code, None);
    }
}
