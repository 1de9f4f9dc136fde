//! The dry run's permission check: EC2's `DryRun` parameter asks AWS
//! whether the role may make each change the run would make, per
//! account-region, and changes nothing. A refusal is reported before any
//! real run would meet it halfway through.

use super::{Workflow, backup, for_each_target, start};
use crate::cloud::{ErrorKind, Probe};
use crate::model::{Failure, PermissionCheck, tag};
use crate::model::{Phase, Run, TargetRun};

/// Checks every change the planned phases would make, on every target.
pub(super) async fn check(wf: &Workflow<'_>, run: &mut Run, backup: bool, starts: bool) {
    let checks = for_each_target(&mut run.targets, |t| check_target(wf, t, backup, starts)).await;
    run.permission_checks = checks.into_iter().flatten().collect();
}

async fn check_target(
    wf: &Workflow<'_>,
    t: &mut TargetRun,
    backup: bool,
    starts: bool,
) -> Vec<PermissionCheck> {
    let Some(first) = t.records.first() else {
        return Vec::new();
    };
    let run_id = wf.options.run_id.as_str();
    let stopped: Vec<_> = t
        .records
        .iter()
        .filter(|r| start::wants_start(r.instance.state))
        .map(|r| r.instance.id.clone())
        .take(start::START_BATCH)
        .collect();
    let mut probes = Vec::new();
    if backup {
        // The very request the backup sends: its image and snapshot tag
        // specifications need ec2:CreateTags on create.
        let shared = backup::run_tags(
            run_id,
            &t.target.landing_zone,
            backup::expiry(wf, &t.target.landing_zone),
        );
        probes.push(Probe::CreateImage(backup::image_request(
            wf, first, run_id, &shared,
        )));
    }
    if let (true, Some(one)) = (starts, stopped.first()) {
        // Started instances are tagged with this one key, and no other.
        let tags = vec![(tag::STARTED_BY.to_owned(), run_id.to_owned())];
        probes.push(Probe::StartInstances(stopped.clone()));
        probes.push(Probe::CreateTags(one.clone(), tags));
    }
    let mut out = Vec::new();
    for probe in probes {
        let result = wf.cloud.permitted(&t.target, &probe).await;
        let check = PermissionCheck {
            target: t.target.clone(),
            action: probe.api().to_string(),
            allowed: result.is_ok(),
            error: result.as_ref().err().map(|e| match e.kind {
                ErrorKind::Denied => Failure::from(e).worded(format!(
                    "denied: {}: {}{}",
                    e.code,
                    e.message,
                    crate::cloud::request_id_suffix(e.request_id.as_deref())
                )),
                _ => Failure::from(e).context("could not check"),
            }),
        };
        if let Some(error) = &check.error {
            wf.event(
                Phase::Scanner,
                &t.target,
                format!("ec2:{}: {error}", check.action),
            );
        }
        out.push(check);
    }
    out
}
