//! Phase 1: who is there. One STS session per landing zone, then per
//! account-region one paginated `DescribeInstances` and one paginated SSM
//! `DescribeInstanceInformation`, side by side, joined on instance id.
//! Read-only: it is safe to run anywhere, any time.

use futures::StreamExt;

use super::{Tally, Workflow, for_each_target};
use crate::cloud::Scope;
use crate::config::LandingZone;
use crate::model::run::PhaseSpan;
use crate::model::{Failure, Record, SsmInfo, Target};
use crate::model::{Phase, Run, TargetRun};

/// STS session names: at most 64 characters of `[\w+=,.@-]`.
pub fn session_name(run_id: &str) -> String {
    format!("prepatch-{run_id}").chars().take(64).collect()
}

pub(super) async fn run(wf: &Workflow<'_>, run: &mut Run, landing_zones: &[&LandingZone]) -> Tally {
    let session = session_name(run.id.as_str());
    let mut sessions: Vec<(usize, &LandingZone, _)> =
        futures::stream::iter(landing_zones.iter().enumerate())
            .map(|(i, lz)| {
                let session = &session;
                async move { (i, *lz, wf.cloud.assume_role(lz, session).await) }
            })
            .buffer_unordered(wf.config.aws.max_concurrency)
            .collect()
            .await;
    sessions.sort_by_key(|(i, _, _)| *i);

    for (_, lz, result) in sessions {
        match result {
            Ok(identity) => {
                wf.event(Phase::Scanner, &lz.name, format!("assumed {identity}"));
                for region in &lz.regions {
                    run.targets.push(TargetRun {
                        target: Target {
                            landing_zone: lz.name.clone(),
                            account: lz.account_id.clone(),
                            region: region.clone(),
                        },
                        environment: lz.environment.clone(),
                        identity: identity.clone(),
                        records: Vec::new(),
                        error: None,
                        ssm_error: None,
                        spans: Vec::new(),
                    });
                }
            }
            Err(e) => {
                tracing::error!(landing_zone = %lz.name, error = %e, "cannot assume role; landing zone skipped");
                wf.event(
                    Phase::Scanner,
                    &lz.name,
                    format!("cannot assume {}: {e}", lz.role_arn),
                );
                run.landing_zone_failures.push(super::LandingZoneFailure {
                    landing_zone: lz.name.clone(),
                    account: lz.account_id.to_string(),
                    error: Failure::from(e).context(format!("cannot assume {}", lz.role_arn)),
                });
            }
        }
    }

    let tallies = for_each_target(&mut run.targets, |t| async {
        let from = wf.clock.now();
        let tally = scan_target(wf, t).await;
        t.spans.push(PhaseSpan {
            phase: Phase::Scanner,
            from,
            to: wf.clock.now(),
        });
        tally
    })
    .await;
    let mut total = Tally::default();
    for t in tallies {
        total += t;
    }
    total.failed += run.landing_zone_failures.len();
    total
}

async fn scan_target(wf: &Workflow<'_>, t: &mut TargetRun) -> Tally {
    if wf.shutdown.requested() {
        t.error = Some(Failure::new("interrupted before the scan"));
        return Tally {
            skipped: 1,
            ..Tally::default()
        };
    }
    let bar = wf.progress.bar(Phase::Scanner, &t.target, 0);
    let timeout = wf.config.phases.scanner.timeout;
    let target = &t.target;
    let scan = async {
        tokio::join!(
            wf.cloud.describe_instances(target, Scope::Active),
            wf.cloud.ssm_info(target, None)
        )
    };
    let (instances, ssm) = match tokio::time::timeout(timeout, scan).await {
        Ok(answers) => answers,
        Err(_) => {
            let msg = format!(
                "scan timed out after {}s (workflow.phases.scanner.timeout)",
                timeout.as_secs()
            );
            return fail(wf, t, &bar, Failure::new(msg));
        }
    };
    let instances = match instances {
        Ok(i) => i,
        Err(e) => return fail(wf, t, &bar, Failure::from(e)),
    };
    // The run goes on without SSM status: each instance says Unknown.
    let ssm = match ssm {
        Ok(known) => Some(known),
        Err(e) => {
            tracing::warn!(target_ = %t.target, error = %e, "SSM status unknown");
            wf.event(
                Phase::Scanner,
                &t.target,
                format!("SSM status unknown: {e}"),
            );
            t.ssm_error = Some(Failure::from(e));
            None
        }
    };
    let filters = &wf.config.filters;
    let mut records: Vec<Record> = instances
        .into_iter()
        .filter(|i| !i.state.is_gone() && filters.admits(&i.id, &i.tags))
        .map(|instance| {
            let ssm = match &ssm {
                Some(known) => known
                    .get(&instance.id)
                    .cloned()
                    .unwrap_or_else(SsmInfo::unregistered),
                None => SsmInfo::unknown(),
            };
            Record {
                landing_zone: t.target.landing_zone.clone(),
                account: t.target.account.clone(),
                region: t.target.region.clone(),
                environment: t.environment.clone(),
                instance,
                ssm,
                backup: None,
                start: None,
                verdict: None,
            }
        })
        .collect();
    records.sort_by(|a, b| a.instance.id.cmp(&b.instance.id));
    let n = records.len();
    bar.set_length(n as u64);
    bar.inc(n as u64);
    bar.finish(format!("{n} instances"));
    tracing::info!(target_ = %t.target, instances = n, "scanned");
    wf.event(Phase::Scanner, &t.target, format!("{n} instances"));
    t.records = records;
    Tally {
        done: n,
        ..Tally::default()
    }
}

fn fail(
    wf: &Workflow<'_>,
    t: &mut TargetRun,
    bar: &super::progress::Bar,
    failure: Failure,
) -> Tally {
    tracing::error!(target_ = %t.target, error = %failure, "scan failed");
    wf.event(Phase::Scanner, &t.target, format!("scan failed: {failure}"));
    bar.finish("failed");
    t.error = Some(failure);
    Tally {
        failed: 1,
        ..Tally::default()
    }
}
