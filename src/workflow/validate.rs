//! Phase 4: is each instance ready to patch? One verdict per instance,
//! READY or NOT READY with every reason.
//!
//! Per account-region and poll: one paginated `DescribeInstances`, one
//! `DescribeInstanceInformation` (SSM), one `DescribeInstanceStatus` with
//! `IncludeAllInstances`. Polling goes on while an answer may still change
//! (an agent registering after a start, status checks initializing), up to
//! `validation.timeout`.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{Phase, Plan, Run, Tally, TargetRun, Workflow, backup, for_each_target};
use crate::cloud::Scope;
use crate::model::{ImageState, InstanceState, Record, SsmInfo, SsmPing, StatusChecks, Verdict};

const POLL_FIRST: Duration = Duration::from_secs(10);
const POLL_MAX: Duration = Duration::from_secs(30);

pub(super) async fn run(wf: &Workflow<'_>, run: &mut Run) -> Tally {
    let backup_ran = run
        .phases
        .iter()
        .any(|p| p.phase == Phase::AmiBackup && p.plan == Plan::Run)
        || run.records().any(|r| r.backup.is_some());
    let mut total = Tally::default();
    for t in for_each_target(&mut run.targets, wf.config.aws.max_concurrency, |t| {
        validate_target(wf, t, backup_ran)
    })
    .await
    {
        total += t;
    }
    total
}

/// One check's finding: a reason, and whether waiting could change it.
struct Finding {
    reason: String,
    transient: bool,
}

async fn validate_target(wf: &Workflow<'_>, t: &mut TargetRun, backup_ran: bool) -> Tally {
    if t.records.is_empty() {
        return Tally::default();
    }
    let bar = wf
        .progress
        .bar(Phase::Validation, &t.target, t.records.len() as u64);
    let v = &wf.config.phases.validation;
    if t.records.iter().any(|r| {
        r.backup
            .as_ref()
            .is_some_and(|b| b.state == Some(ImageState::Pending))
    }) {
        bar.message("waiting for AMIs");
        backup::wait_for_images(wf, t, wf.config.phases.ami_backup.timeout).await;
    }
    let deadline = tokio::time::Instant::now() + v.timeout;
    let mut interval = POLL_FIRST;
    let mut findings: Vec<Vec<Finding>>;
    loop {
        bar.message("checking");
        let (states, ssm, status) = tokio::join!(
            wf.cloud.describe_instances(&t.target, Scope::All),
            async {
                if v.ssm_ping {
                    Some(wf.cloud.ssm_info(&t.target).await)
                } else {
                    None
                }
            },
            async {
                if v.health_checks {
                    Some(wf.cloud.instance_status(&t.target).await)
                } else {
                    None
                }
            },
        );
        let states: Option<BTreeMap<_, _>> = states
            .inspect_err(
                |e| tracing::warn!(target_ = %t.target, error = %e, "DescribeInstances failed"),
            )
            .ok()
            .map(|all| all.into_iter().map(|i| (i.id, i.state)).collect());
        let ssm = ssm.map(|answer| answer.map_err(|e| e.to_string()));
        let status: Option<Result<BTreeMap<_, StatusChecks>, String>> = status.map(|answer| {
            answer
                .map(|all| all.into_iter().map(|s| (s.id.clone(), s)).collect())
                .map_err(|e| e.to_string())
        });

        findings = t
            .records
            .iter_mut()
            .map(|r| {
                let state = match &states {
                    Some(states) => states
                        .get(&r.instance.id)
                        .copied()
                        .unwrap_or(InstanceState::Terminated),
                    None => InstanceState::Unknown,
                };
                if let Some(Ok(ssm)) = &ssm {
                    r.ssm = ssm
                        .get(&r.instance.id)
                        .cloned()
                        .unwrap_or_else(SsmInfo::unregistered);
                } else if let Some(Err(_)) = &ssm {
                    r.ssm = SsmInfo::unknown();
                }
                if let Some(start) = r.start.as_mut() {
                    if state != InstanceState::Unknown {
                        start.final_state = state;
                    }
                }
                check(r, state, ssm.as_ref(), status.as_ref(), backup_ran)
            })
            .collect();

        let waiting = findings.iter().flatten().any(|f| f.transient);
        let now = tokio::time::Instant::now();
        if !waiting || now >= deadline || !wf.shutdown.sleep(interval.min(deadline - now)).await {
            break;
        }
        interval = interval.mul_f64(1.5).min(POLL_MAX);
    }

    let mut tally = Tally::default();
    for (r, found) in t.records.iter_mut().zip(findings) {
        let reasons: Vec<String> = found
            .into_iter()
            .map(|f| {
                if f.transient {
                    format!("{} after {}s", f.reason, v.timeout.as_secs())
                } else {
                    f.reason
                }
            })
            .collect();
        let verdict = Verdict {
            ready: reasons.is_empty(),
            reasons,
        };
        if verdict.ready {
            tally.done += 1;
        } else {
            tally.failed += 1;
            wf.event(
                Phase::Validation,
                &r.instance.id,
                format!("NOT READY: {}", verdict.reasons.join("; ")),
            );
        }
        r.verdict = Some(verdict);
        bar.inc(1);
    }
    bar.finish(format!("{} READY, {} NOT READY", tally.done, tally.failed));
    tally
}

fn check(
    r: &Record,
    state: InstanceState,
    ssm: Option<&Result<BTreeMap<crate::model::InstanceId, SsmInfo>, String>>,
    status: Option<&Result<BTreeMap<crate::model::InstanceId, StatusChecks>, String>>,
    backup_ran: bool,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut add = |reason: String, transient: bool| out.push(Finding { reason, transient });
    let started = r.start.as_ref().is_some_and(|s| s.started_by_run);

    match state {
        InstanceState::Running => {}
        InstanceState::Unknown => add("state: unknown (DescribeInstances failed)".into(), true),
        s => add(
            format!("state: {s} (expected running)"),
            s == InstanceState::Pending,
        ),
    }
    if let Some(start) = &r.start {
        if let Some(e) = &start.error {
            add(format!("start: {e}"), false);
        }
    }
    if backup_ran {
        match &r.backup {
            Some(b) => match (b.state, &b.error) {
                (Some(ImageState::Available), _) => {}
                (_, Some(e)) => add(format!("backup: {e}"), false),
                (Some(s), None) => add(format!("backup: {s}"), false),
                (None, None) => add("backup: none".into(), false),
            },
            None => add("backup: none".into(), false),
        }
    }
    if let Some(ssm) = ssm {
        match ssm {
            Err(e) => add(format!("ssm: Unknown ({e})"), true),
            Ok(_) if r.ssm.ping == SsmPing::Online => {}
            // An agent registers some time after its instance starts.
            Ok(_) => add(
                format!("ssm: {}", r.ssm.ping),
                started && state == InstanceState::Running,
            ),
        }
    }
    if let Some(status) = status {
        if state == InstanceState::Running {
            match status {
                Err(e) => add(format!("status-check: unknown ({e})"), true),
                Ok(all) => match all.get(&r.instance.id) {
                    None => add("status-check: no data".into(), true),
                    Some(s) => {
                        for (what, value) in [
                            ("instance", &s.instance_status),
                            ("system", &s.system_status),
                        ] {
                            match value.as_str() {
                                "ok" | "not-applicable" => {}
                                "initializing" | "insufficient-data" => {
                                    add(format!("status-check: {what} {value}"), true)
                                }
                                _ => add(format!("status-check: {what} {value}"), false),
                            }
                        }
                    }
                },
            }
        }
    }
    out
}
