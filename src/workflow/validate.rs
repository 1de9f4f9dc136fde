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

use super::poll::Polls;
use super::{Tally, Workflow, backup};
use crate::cloud::Scope;
use crate::model::{ImageState, InstanceId, InstanceState, Record, SsmInfo, StatusChecks, Verdict};
use crate::model::{Phase, TargetRun, ready};

/// The longest gap between two looks ([`Polls`]).
const POLL_MAX: Duration = Duration::from_secs(60);
/// The shortest: EC2 runs its status checks about once a minute, and an
/// agent takes a minute or two to register after boot; looking every
/// second for those would only spend requests.
const POLL_MIN: Duration = Duration::from_secs(2);

/// What a finding is about: each has its own AWS call to ask again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Check {
    State,
    Start,
    Backup,
    Ssm,
    Status,
}

/// One check's finding: a reason, and whether waiting could change it.
struct Finding {
    check: Check,
    reason: String,
    transient: bool,
}

/// Phase 4 in one account-region: a verdict per instance.
pub(super) async fn validate_target(
    wf: &Workflow<'_>,
    t: &mut TargetRun,
    backup_ran: bool,
) -> Tally {
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
        backup::wait_for_images(
            wf,
            t,
            wf.config.phases.ami_backup.timeout,
            backup::Repair::Nothing,
            &bar,
        )
        .await;
    }
    let polls = Polls::new(v.timeout, POLL_MAX).first_gap(POLL_MIN);
    let mut answers = Answers::default();
    let mut findings: Vec<Vec<Finding>> = Vec::new();
    let (mut first, mut last) = (true, false);
    loop {
        bar.message("checking");
        answers.ask(wf, t, &findings, first, last).await;
        findings = answers.judge(wf, t, backup_ran);
        first = false;
        let in_doubt = findings
            .iter()
            .filter(|f| f.iter().any(|f| f.transient))
            .count();
        if last || in_doubt == 0 {
            break;
        }
        bar.waiting(
            &format!(
                "{} still changing",
                super::progress::plural(in_doubt, "instance")
            ),
            polls.waited(),
        );
        if !polls.wait(&wf.shutdown).await {
            break;
        }
        last = polls.expired();
    }
    let tally = verdicts(wf, t, findings, &bar);
    bar.finish(format!("{} READY, {} NOT READY", tally.done, tally.failed));
    tally
}

/// What each answer said last. The first look asks about everything;
/// later looks only about what may still change (a pending state, an
/// agent registering, status checks initializing), so waiting for a few
/// stragglers costs a request or two a look, not a fleet's worth of pages.
/// An agent still registering is asked about again once nothing else of
/// its instance is in doubt (its state, its status checks): until then its
/// answer could not change the verdict, and asking about a few hundred
/// agents takes a request per 40. The look at the deadline asks about
/// everything still in doubt, so that no verdict gives a stale reason.
#[derive(Default)]
struct Answers {
    states: Option<BTreeMap<InstanceId, InstanceState>>,
    ssm: Option<Result<BTreeMap<InstanceId, SsmInfo>, String>>,
    status: Option<Result<BTreeMap<InstanceId, StatusChecks>, String>>,
}

impl Answers {
    /// One look: the three calls at once, each only if something it
    /// answers is still in doubt.
    async fn ask(
        &mut self,
        wf: &Workflow<'_>,
        t: &TargetRun,
        findings: &[Vec<Finding>],
        first: bool,
        last: bool,
    ) {
        let v = &wf.config.phases.validation;
        let in_doubt = |check: Check| {
            first
                || findings
                    .iter()
                    .flatten()
                    .any(|f| f.transient && f.check == check)
        };
        let ask_states = in_doubt(Check::State);
        let ask_status = v.health_checks && (in_doubt(Check::Status) || in_doubt(Check::State));
        // After a good answer, only agents still in doubt, by id.
        let ssm_ask: Option<Vec<InstanceId>> = match &self.ssm {
            Some(Ok(_)) if !first => Some(
                t.records
                    .iter()
                    .zip(findings)
                    .filter(|(_, f)| {
                        f.iter().any(|f| f.transient && f.check == Check::Ssm)
                            && (last || !f.iter().any(|f| f.transient && f.check != Check::Ssm))
                    })
                    .map(|(r, _)| r.instance.id.clone())
                    .collect(),
            ),
            _ => None,
        };
        let ask_ssm = v.ssm_ping && ssm_ask.as_ref().is_none_or(|ids| !ids.is_empty());
        let (new_states, new_ssm, new_status) = tokio::join!(
            async {
                match ask_states {
                    true => Some(wf.cloud.describe_instances(&t.target, Scope::All).await),
                    false => None,
                }
            },
            async {
                match ask_ssm {
                    true => Some(wf.cloud.ssm_info(&t.target, ssm_ask.as_deref()).await),
                    false => None,
                }
            },
            async {
                match ask_status {
                    true => Some(wf.cloud.instance_status(&t.target).await),
                    false => None,
                }
            },
        );
        match new_states {
            None => {}
            Some(Ok(all)) => self.states = Some(all.into_iter().map(|i| (i.id, i.state)).collect()),
            Some(Err(e)) => {
                tracing::warn!(target_ = %t.target, error = %e, "DescribeInstances failed");
                self.states = None;
            }
        }
        match (new_ssm, &mut self.ssm, ssm_ask) {
            (None, ..) => {}
            (Some(Ok(found)), Some(Ok(seen)), Some(asked)) => {
                for id in asked {
                    let info = found
                        .get(&id)
                        .cloned()
                        .unwrap_or_else(SsmInfo::unregistered);
                    seen.insert(id, info);
                }
            }
            (Some(answer), ..) => self.ssm = Some(answer.map_err(|e| e.to_string())),
        }
        if let Some(answer) = new_status {
            self.status = Some(
                answer
                    .map(|all| all.into_iter().map(|s| (s.id.clone(), s)).collect())
                    .map_err(|e| e.to_string()),
            );
        }
    }

    /// Each instance's findings from the answers so far; the records take
    /// what the answers say of their SSM agent and state.
    fn judge(&self, wf: &Workflow<'_>, t: &mut TargetRun, backup_ran: bool) -> Vec<Vec<Finding>> {
        let v = &wf.config.phases.validation;
        t.records
            .iter_mut()
            .map(|r| {
                let state = match &self.states {
                    Some(states) => states
                        .get(&r.instance.id)
                        .copied()
                        .unwrap_or(InstanceState::Terminated),
                    None => InstanceState::Unknown,
                };
                match &self.ssm {
                    Some(Ok(seen)) => {
                        r.ssm = seen
                            .get(&r.instance.id)
                            .cloned()
                            .unwrap_or_else(SsmInfo::unregistered);
                    }
                    Some(Err(_)) => r.ssm = SsmInfo::unknown(),
                    None => {}
                }
                if let Some(start) = r.start.as_mut()
                    && state != InstanceState::Unknown
                {
                    start.final_state = state;
                }
                let ssm = if v.ssm_ping { self.ssm.as_ref() } else { None };
                check(r, state, ssm, self.status.as_ref(), backup_ran)
            })
            .collect()
    }
}

/// One verdict per instance: READY, or NOT READY with every reason.
fn verdicts(
    wf: &Workflow<'_>,
    t: &mut TargetRun,
    findings: Vec<Vec<Finding>>,
    bar: &super::progress::Bar,
) -> Tally {
    let v = &wf.config.phases.validation;
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
    let mut add = |check: Check, reason: String, transient: bool| {
        out.push(Finding {
            check,
            reason,
            transient,
        })
    };
    let started = r.start.as_ref().is_some_and(|s| s.started_by_run);

    if let Some(p) = ready::state_problem(state) {
        add(Check::State, p.reason, p.transient);
    }
    if let Some(start) = &r.start
        && let Some(e) = &start.error
    {
        add(Check::Start, format!("start: {e}"), false);
    }
    if backup_ran {
        match &r.backup {
            Some(b) => match (b.state, &b.error) {
                (Some(ImageState::Available), _) => {}
                (_, Some(e)) => add(Check::Backup, format!("backup: {e}"), false),
                (Some(s), None) => add(Check::Backup, format!("backup: {s}"), false),
                (None, None) => add(Check::Backup, "backup: none".into(), false),
            },
            None => add(Check::Backup, "backup: none".into(), false),
        }
    }
    if let Some(ssm) = ssm {
        match ssm {
            Err(e) => add(Check::Ssm, format!("ssm: Unknown ({e})"), true),
            Ok(_) if ready::ssm_ready(&r.ssm.ping) => {}
            // An agent registers some time after its instance starts.
            Ok(_) => add(
                Check::Ssm,
                format!("ssm: {}", r.ssm.ping),
                started
                    && matches!(
                        state,
                        InstanceState::Running | InstanceState::Pending | InstanceState::Unknown
                    ),
            ),
        }
    }
    if let (Some(status), InstanceState::Running) = (status, state) {
        out.extend(status_findings(r, status));
    }
    out
}

/// What EC2's status checks say of a running instance: a finding for each
/// check that is not ok (still initializing: worth another look).
fn status_findings(
    r: &Record,
    status: &Result<BTreeMap<crate::model::InstanceId, StatusChecks>, String>,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut finding = |check: Check, reason: String, transient: bool| {
        out.push(Finding {
            check,
            reason,
            transient,
        })
    };
    match status {
        Err(e) => finding(Check::Status, format!("status-check: unknown ({e})"), true),
        Ok(all) => {
            for p in ready::status_problems(all.get(&r.instance.id)) {
                finding(Check::Status, p.reason, p.transient);
            }
        }
    }
    out
}
