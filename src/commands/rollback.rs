//! `prepatch rollback --run <id>`: when a patch broke a server, put its
//! root volume back to the backup that run made of it.
//!
//! For each chosen instance, the AMI of the run (its tags point at it; AWS's
//! own fields and the journal decide, as for cleanup: [`Image::backup_of`])
//! restores the root volume with EC2's replace-root-volume task
//! (`CreateReplaceRootVolumeTask` with `ImageId`): the instance keeps its id,
//! private IP, network interfaces and data volumes; the replaced volume is
//! kept, detached, unless `--delete-replaced-volume`. Then each task is
//! waited on (`DescribeReplaceRootVolumeTasks`, one request per
//! account-region a poll) and the instance is checked as validation checks
//! it: running, status checks ok, SSM agent Online.
//!
//! What it does not do: restore data volumes (the report lists the AMI's
//! data-volume snapshots to restore them from), or start a stopped
//! instance (replacing a root volume needs it running) unless `--start`.
//!
//! A task's client token is made from the run, the instance, the AMI and
//! the number of the run's earlier failed tasks on it: a rollback run again
//! after a crash is given the task it made, never a second one, and one run
//! again after a failed task tries once more.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use super::{Context, Operation, connect_aws, environments_of};
use crate::cli::RollbackArgs;
use crate::cloud::limit::Paced;
use crate::cloud::{Cloud, CloudError, ImageFilter, Probe, Scope};
use crate::config::{Config, LandingZone};
use crate::journal::{Journaled, NewRun, RunParams};
pub use crate::model::rollback::{Action, Row, TargetPlan, Verdict, summary_line};
use crate::model::rollback::{RootTask, RootTaskRequest, RootTaskState, client_token};
use crate::model::{
    Image, ImageState, Instance, InstanceId, InstanceState, Region, RunId, SsmPing, StatusChecks,
    TagMap, Target, Witnesses, ready, tag,
};
use crate::workflow::poll::Polls;
use crate::workflow::{Confirmation, Shutdown, for_each_target};
use crate::{Error, Outcome};

/// The longest a replace-root-volume task is waited on: EC2 makes a volume
/// from the AMI's snapshot and reboots the instance onto it, minutes.
const TASK_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// The longest gap between two looks at tasks, or at instances coming back.
const POLL_MAX: Duration = Duration::from_secs(30);

/// Which instances to roll back.
#[derive(Clone, Debug, Default)]
pub struct Wanted {
    /// These instances; empty: every instance the run backed up (in the
    /// landing zones given).
    pub instances: BTreeSet<String>,
}

/// How to roll back.
#[derive(Clone, Debug)]
pub struct Settings {
    pub start: bool,
    pub delete_replaced: bool,
    /// How long a started instance may take to run.
    pub start_timeout: Duration,
    /// How long an instance may take to pass its checks after its rollback.
    pub check_timeout: Duration,
}

/// Looks at every account-region: which backup of `run_id` each chosen
/// instance has, whether it may be used, and the tasks already made.
/// Per account-region: one `DescribeImages` (the run's tag), one
/// `DescribeInstances`, one `DescribeReplaceRootVolumeTasks` per 200 ids.
pub async fn plan(
    cloud: &dyn Cloud,
    landing_zones: &[LandingZone],
    run_id: &str,
    witnesses: &Witnesses,
    wanted: &Wanted,
    start: bool,
    session_name: &str,
) -> Vec<TargetPlan> {
    super::for_each_region(cloud, landing_zones, session_name, |lz, region, assumed| {
        plan_target(cloud, lz, region, assumed, run_id, witnesses, wanted, start)
    })
    .await
}

#[allow(clippy::too_many_arguments)]
async fn plan_target(
    cloud: &dyn Cloud,
    lz: &LandingZone,
    region: &Region,
    assumed: Result<(), CloudError>,
    run_id: &str,
    witnesses: &Witnesses,
    wanted: &Wanted,
    start: bool,
) -> TargetPlan {
    let target = Target {
        landing_zone: lz.name.clone(),
        account: lz.account_id.clone(),
        region: region.clone(),
    };
    let mut p = TargetPlan {
        target: target.clone(),
        environment: lz.environment.clone(),
        rows: Vec::new(),
        error: None,
    };
    if let Err(e) = assumed {
        p.error = Some(format!("cannot assume the role: {e}"));
        return p;
    }
    let mine = ImageFilter::Tag(tag::RUN_ID.into(), run_id.into());
    let images = match cloud.describe_images(&target, &mine).await {
        Ok(i) => i,
        Err(e) => {
            p.error = Some(e.to_string());
            return p;
        }
    };
    // The AMIs tagged as each chosen instance's backup: the original, and
    // maybe copies or forgeries that carry the same tags.
    let mut by_instance: BTreeMap<InstanceId, Vec<&Image>> = BTreeMap::new();
    for image in &images {
        let Some(id) = image.tags.get(tag::INSTANCE_ID) else {
            continue;
        };
        if wanted.instances.is_empty() || wanted.instances.contains(id) {
            by_instance
                .entry(InstanceId::new(id))
                .or_default()
                .push(image);
        }
    }
    if by_instance.is_empty() {
        return p;
    }
    let ids: Vec<InstanceId> = by_instance.keys().cloned().collect();
    let (instances, tasks) = match tokio::try_join!(
        cloud.describe_instances(&target, Scope::All),
        cloud.root_tasks(&target, &ids),
    ) {
        Ok(both) => both,
        Err(e) => {
            p.error = Some(e.to_string());
            return p;
        }
    };
    let instances: BTreeMap<&InstanceId, &Instance> =
        instances.iter().map(|i| (&i.id, i)).collect();
    for (id, candidates) in &by_instance {
        let instance = instances.get(id).copied();
        let mut row = Row {
            landing_zone: lz.name.clone(),
            account: lz.account_id.to_string(),
            region: region.to_string(),
            environment: lz.environment.clone(),
            instance_id: id.to_string(),
            name: instance
                .and_then(|i| i.name())
                .unwrap_or_default()
                .to_owned(),
            ami: String::new(),
            action: Action::Refused,
            task_id: String::new(),
            task_state: String::new(),
            task_started_at: String::new(),
            task_completed_at: String::new(),
            state: instance.map_or("not found".into(), |i| i.state.to_string()),
            status_checks: String::new(),
            ssm: String::new(),
            verdict: Verdict::None,
            reason: String::new(),
            data_snapshots: Vec::new(),
        };
        let backup = candidates
            .iter()
            .map(|image| {
                (
                    image,
                    image.backup_of(&lz.account_id, run_id, |i| witnesses.of(i)),
                )
            })
            .find(|(_, made)| made.as_ref().is_ok_and(|i| i == id));
        let Some((image, _)) = backup else {
            let why: Vec<String> = candidates
                .iter()
                .map(
                    |image| match image.backup_of(&lz.account_id, run_id, |i| witnesses.of(i)) {
                        Ok(_) => format!("{}: not this instance's", image.id),
                        Err(why) => format!("{}: {why}", image.id),
                    },
                )
                .collect();
            row.reason = format!("no backup of run {run_id} to use: {}", why.join("; "));
            p.rows.push(row);
            continue;
        };
        row.ami = image.id.to_string();
        row.data_snapshots = image.snapshot_ids.iter().skip(1).cloned().collect();
        let mine: Vec<&RootTask> = tasks
            .iter()
            .filter(|t| {
                t.instance == *id
                    && t.tags.get(tag::ROLLBACK_OF).map(String::as_str) == Some(run_id)
            })
            .collect();
        // The one that counts: one still going or done, else the last failure.
        let latest = mine
            .iter()
            .find(|t| !t.state.is_final() || t.state == RootTaskState::Succeeded)
            .or(mine.last())
            .copied();
        let (action, reason) = decide(image, instance, latest, start);
        if let Some(task) =
            latest.filter(|t| !t.state.is_final() || t.state == RootTaskState::Succeeded)
        {
            show_task(&mut row, task);
        }
        row.action = action;
        row.reason = reason;
        p.rows.push(row);
    }
    p
}

/// What to do with an instance, given its backup, its state and the
/// latest task this run's rollbacks made on it.
fn decide(
    image: &Image,
    instance: Option<&Instance>,
    task: Option<&RootTask>,
    start: bool,
) -> (Action, String) {
    if image.state != ImageState::Available {
        let reason = image
            .state_reason
            .as_deref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default();
        return (
            Action::Refused,
            format!(
                "its backup {} is {}{reason}, not available",
                image.id, image.state
            ),
        );
    }
    if let Some(task) = task {
        match task.state {
            RootTaskState::Succeeded => {
                return (
                    Action::RolledBack,
                    format!("rolled back already (task {})", task.id),
                );
            }
            // Made by an earlier attempt and still going: waited on, not made again.
            ref s if !s.is_final() => {
                return (
                    Action::WouldRollBack,
                    format!("task {} of an earlier attempt is {s}", task.id),
                );
            }
            _ => {}
        }
    }
    let Some(instance) = instance else {
        return (Action::Refused, "the instance is not found".into());
    };
    match instance.state {
        InstanceState::Running => (Action::WouldRollBack, String::new()),
        InstanceState::Stopped if start => (
            Action::WouldRollBack,
            "stopped: started first (--start)".into(),
        ),
        InstanceState::Stopped => (
            Action::Stopped,
            "stopped: not started (a root volume is replaced on a running instance; pass --start)"
                .into(),
        ),
        s => (
            Action::Refused,
            format!("the instance is {s}: run again once it is running or stopped"),
        ),
    }
}

fn show_task(row: &mut Row, task: &RootTask) {
    row.task_id = task.id.clone();
    row.task_state = task.state.to_string();
    row.task_started_at = task.started_at.clone().unwrap_or_default();
    row.task_completed_at = task.completed_at.clone().unwrap_or_default();
}

/// The request that rolls `row`'s instance back; `failed_before` is the
/// number of this run's failed tasks on it (a new token for a new try).
fn request(
    row: &Row,
    run_id: &str,
    failed_before: usize,
    delete_replaced: bool,
) -> RootTaskRequest {
    let instance = InstanceId::new(&row.instance_id);
    let image = crate::model::AmiId::new(&row.ami);
    let tags: TagMap = [
        (tag::CREATED_BY, tag::CREATED_BY_VALUE),
        (tag::ROLLBACK_OF, run_id),
        (tag::INSTANCE_ID, row.instance_id.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let client_token = client_token(&instance, &image, delete_replaced, &tags, failed_before);
    RootTaskRequest {
        instance,
        image,
        client_token,
        delete_replaced,
        tags,
    }
}

/// `--dry-run`: EC2's `DryRun` of each task (and of each start, with
/// `--start`): permissions checked, nothing changed.
pub async fn probe(cloud: &dyn Cloud, plans: &mut [TargetPlan], run_id: &str, s: &Settings) {
    for_each_target(plans, |p| async move {
        let t = p.target.clone();
        for row in p
            .rows
            .iter_mut()
            .filter(|r| r.action == Action::WouldRollBack)
        {
            let mut probes = Vec::new();
            if row.state == InstanceState::Stopped.to_string() {
                probes.push(Probe::StartInstances(vec![InstanceId::new(
                    &row.instance_id,
                )]));
            }
            probes.push(Probe::ReplaceRootVolume(request(
                row,
                run_id,
                0,
                s.delete_replaced,
            )));
            for probe in probes {
                if let Err(e) = cloud.permitted(&t, &probe).await {
                    row.action = Action::Refused;
                    row.reason = format!("dry run: not permitted: {e}");
                    break;
                }
            }
            if row.action == Action::WouldRollBack && row.reason.is_empty() {
                row.reason = "dry run: permitted".into();
            }
        }
    })
    .await;
}

/// Rolls back what the plan says, on every account-region at once, until
/// `shutdown`: then no task is asked for any more, tasks already asked
/// for are still waited on and checked.
pub async fn apply_until(
    cloud: &dyn Cloud,
    plans: &mut [TargetPlan],
    run_id: &str,
    s: &Settings,
    shutdown: &Shutdown,
) {
    for_each_target(plans, |p| apply_target(cloud, p, run_id, s, shutdown)).await;
}

async fn apply_target(
    cloud: &dyn Cloud,
    p: &mut TargetPlan,
    run_id: &str,
    s: &Settings,
    shutdown: &Shutdown,
) {
    if p.error.is_some() {
        return;
    }
    let t = p.target.clone();
    let stopped = InstanceState::Stopped.to_string();
    let to_start: Vec<usize> = (0..p.rows.len())
        .filter(|&i| {
            p.rows[i].action == Action::WouldRollBack
                && p.rows[i].task_id.is_empty()
                && p.rows[i].state == stopped
        })
        .collect();
    if !to_start.is_empty() && !shutdown.requested() {
        start(cloud, &t, p, &to_start, s.start_timeout, shutdown).await;
    }
    // Earlier failed tasks, for a fresh client token.
    let ids: Vec<InstanceId> = p
        .rows
        .iter()
        .filter(|r| r.action == Action::WouldRollBack && r.task_id.is_empty())
        .map(|r| InstanceId::new(&r.instance_id))
        .collect();
    let failed_before: BTreeMap<InstanceId, usize> = match ids.is_empty() {
        true => BTreeMap::new(),
        false => cloud
            .root_tasks(&t, &ids)
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|k| k.tags.get(tag::ROLLBACK_OF).map(String::as_str) == Some(run_id))
            .filter(|k| {
                k.state == RootTaskState::Failed || k.state == RootTaskState::FailedDetached
            })
            .fold(BTreeMap::new(), |mut m, k| {
                *m.entry(k.instance).or_insert(0) += 1;
                m
            }),
    };
    for row in p
        .rows
        .iter_mut()
        .filter(|r| r.action == Action::WouldRollBack)
    {
        if !row.task_id.is_empty() {
            continue;
        }
        if shutdown.requested() {
            row.action = Action::NotDone;
            row.reason = "not done: interrupted".into();
            continue;
        }
        let before = failed_before
            .get(&InstanceId::new(&row.instance_id))
            .copied()
            .unwrap_or(0);
        match cloud
            .replace_root_volume(&t, &request(row, run_id, before, s.delete_replaced))
            .await
        {
            Ok(task) => {
                show_task(row, &task);
                row.reason.clear();
            }
            Err(e) => {
                row.action = Action::Failed;
                row.reason = e.to_string();
            }
        }
    }
    wait_for_tasks(cloud, &t, p, shutdown).await;
    check(cloud, &t, p, s.check_timeout, shutdown).await;
}

/// Starts the stopped instances to roll back (`--start`), then waits until
/// they run; one that does not is failed.
async fn start(
    cloud: &dyn Cloud,
    t: &Target,
    p: &mut TargetPlan,
    rows: &[usize],
    timeout: Duration,
    shutdown: &Shutdown,
) {
    let ids: Vec<InstanceId> = rows
        .iter()
        .map(|&i| InstanceId::new(&p.rows[i].instance_id))
        .collect();
    if let Err(e) = cloud.start_instances(t, &ids).await {
        for &i in rows {
            p.rows[i].action = Action::Failed;
            p.rows[i].reason = format!("starting it failed: {e}");
        }
        return;
    }
    let polls = Polls::new(timeout, POLL_MAX);
    let mut states: BTreeMap<InstanceId, InstanceState> = BTreeMap::new();
    loop {
        if !polls.wait(shutdown).await {
            break;
        }
        if let Ok(all) = cloud.describe_instances(t, Scope::All).await {
            states = all.into_iter().map(|i| (i.id, i.state)).collect();
        }
        if ids
            .iter()
            .all(|id| states.get(id) == Some(&InstanceState::Running))
        {
            break;
        }
    }
    for &i in rows {
        let row = &mut p.rows[i];
        match states.get(&InstanceId::new(&row.instance_id)) {
            Some(InstanceState::Running) => row.state = InstanceState::Running.to_string(),
            s => {
                row.action = Action::Failed;
                row.reason = format!(
                    "started, but not running in time ({})",
                    s.map_or("not found".into(), ToString::to_string)
                );
            }
        }
    }
}

/// Waits until every task of the target has ended: one
/// `DescribeReplaceRootVolumeTasks` a look, for the tasks still going.
async fn wait_for_tasks(cloud: &dyn Cloud, t: &Target, p: &mut TargetPlan, shutdown: &Shutdown) {
    let going = |p: &TargetPlan| -> Vec<InstanceId> {
        p.rows
            .iter()
            .filter(|r| !r.task_id.is_empty() && !RootTaskState::parse(&r.task_state).is_final())
            .map(|r| InstanceId::new(&r.instance_id))
            .collect()
    };
    let polls = Polls::new(TASK_TIMEOUT, POLL_MAX);
    loop {
        let ids = going(p);
        if ids.is_empty() || !polls.wait(shutdown).await {
            break;
        }
        match cloud.root_tasks(t, &ids).await {
            Ok(tasks) => {
                let by_id: BTreeMap<&str, &RootTask> =
                    tasks.iter().map(|k| (k.id.as_str(), k)).collect();
                for row in &mut p.rows {
                    if let Some(task) = by_id.get(row.task_id.as_str()) {
                        show_task(row, task);
                    }
                }
            }
            Err(e) => {
                tracing::warn!(target_ = %t, error = %e, "DescribeReplaceRootVolumeTasks failed; will poll again")
            }
        }
    }
    for row in p.rows.iter_mut().filter(|r| !r.task_id.is_empty()) {
        match RootTaskState::parse(&row.task_state) {
            RootTaskState::Succeeded => row.action = Action::RolledBack,
            RootTaskState::FailedDetached => {
                row.action = Action::Failed;
                row.reason = format!(
                    "task {} failed and left the instance without its root volume: attach one by hand",
                    row.task_id
                );
            }
            s if s.is_final() => {
                row.action = Action::Failed;
                row.reason = format!("task {} {s}; the original root volume stays", row.task_id);
            }
            // A task asked for goes on in AWS: the same rollback run again
            // waits for it (its client token) instead of making another.
            s if shutdown.requested() => {
                row.action = Action::NotDone;
                row.reason = format!(
                    "task {} is {s}: interrupted; run the rollback again to wait for it",
                    row.task_id
                );
            }
            s => {
                row.action = Action::Failed;
                row.reason = format!(
                    "task {} still {s} after {} minutes",
                    row.task_id,
                    TASK_TIMEOUT.as_secs() / 60
                );
            }
        }
    }
}

/// Checks the instances rolled back as validation does, until each is
/// READY or `timeout` passes: running, status checks ok, SSM agent Online.
async fn check(
    cloud: &dyn Cloud,
    t: &Target,
    p: &mut TargetPlan,
    timeout: Duration,
    shutdown: &Shutdown,
) {
    let rolled: Vec<usize> = (0..p.rows.len())
        .filter(|&i| p.rows[i].action == Action::RolledBack)
        .collect();
    if rolled.is_empty() {
        return;
    }
    let ids: Vec<InstanceId> = rolled
        .iter()
        .map(|&i| InstanceId::new(&p.rows[i].instance_id))
        .collect();
    let polls = Polls::new(timeout, POLL_MAX).first_gap(Duration::from_secs(2));
    let mut ssm_known: BTreeMap<InstanceId, SsmPing> = BTreeMap::new();
    loop {
        // SSM is asked again only about the agents not Online yet.
        let doubt: Vec<InstanceId> = ids
            .iter()
            .filter(|id| ssm_known.get(*id) != Some(&SsmPing::Online))
            .cloned()
            .collect();
        let (states, checks, ssm) = tokio::join!(
            cloud.describe_instances(t, Scope::All),
            cloud.instance_status(t),
            cloud.ssm_info(t, Some(&doubt)),
        );
        let states: BTreeMap<InstanceId, InstanceState> = states
            .map(|v| v.into_iter().map(|i| (i.id, i.state)).collect())
            .unwrap_or_default();
        let checks: BTreeMap<InstanceId, StatusChecks> = checks
            .map(|v| v.into_iter().map(|c| (c.id.clone(), c)).collect())
            .unwrap_or_default();
        let ssm_ok = ssm.is_ok();
        if let Ok(answer) = ssm {
            for id in &doubt {
                ssm_known.remove(id);
            }
            ssm_known.extend(answer.into_iter().map(|(id, info)| (id, info.ping)));
        }
        let ssm = &ssm_known;
        let mut ready = 0;
        for (&i, id) in rolled.iter().zip(&ids) {
            let row = &mut p.rows[i];
            row.state = states
                .get(id)
                .map_or("not found".into(), ToString::to_string);
            let status = checks.get(id);
            row.status_checks = status
                .map(|c| format!("{}/{}", c.instance_status, c.system_status))
                .unwrap_or_default();
            let ping = ssm.get(id);
            row.ssm = match (ping, ssm_ok) {
                (Some(ping), _) => ping.as_str().to_owned(),
                (None, true) => "not registered".into(),
                (None, false) => "unknown: the SSM call failed".into(),
            };
            // The rules validation judges by (model::ready).
            let state = states.get(id).copied().unwrap_or(InstanceState::Unknown);
            let mut why: Vec<String> = Vec::new();
            if let Some(p) = ready::state_problem(state) {
                why.push(p.reason);
            }
            if state == InstanceState::Running {
                why.extend(ready::status_problems(status).into_iter().map(|p| p.reason));
            }
            if !ping.is_some_and(ready::ssm_ready) {
                why.push(format!("ssm: {}", row.ssm));
            }
            if why.is_empty() {
                row.verdict = Verdict::Ready;
                row.reason.clear();
                ready += 1;
            } else {
                row.verdict = Verdict::NotReady;
                row.reason = format!("after its rollback: {}", why.join(", "));
            }
        }
        if ready == rolled.len() || !polls.wait(shutdown).await {
            break;
        }
    }
}

/// Prints the plan or what was done, per instance.
pub fn write_summary(
    run_id: &str,
    rollback_id: &str,
    plans: &[TargetPlan],
    applied: bool,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    crate::oneline!(out, "rollback of run {run_id} (rollback id {rollback_id})")?;
    for p in plans {
        if let Some(e) = &p.error {
            crate::oneline!(out, "  {} ({}): FAILED: {e}", p.target, p.target.account)?;
        }
        for r in &p.rows {
            let verdict = match r.verdict {
                Verdict::None => String::new(),
                v => format!(" {}", v.as_str()),
            };
            let task = match r.task_id.is_empty() {
                true => String::new(),
                false => format!(" task {} {}", r.task_id, r.task_state),
            };
            let reason = match r.reason.is_empty() {
                true => String::new(),
                false => format!(": {}", r.reason),
            };
            let from = match r.ami.is_empty() {
                true => String::new(),
                false => format!(" from {}", r.ami),
            };
            crate::oneline!(
                out,
                "  {:<16} {} ({} {}/{}){from}{task}{verdict}{reason}",
                r.action.as_str(),
                r.instance_id,
                r.landing_zone,
                r.account,
                r.region,
            )?;
            if !r.data_snapshots.is_empty() {
                crate::oneline!(
                    out,
                    "    data volumes not restored; their snapshots: {}",
                    r.data_snapshots.join(", ")
                )?;
            }
        }
    }
    crate::oneline!(out, "  {}", summary_line(plans, applied))
}

/// `prepatch rollback --run <id>`.
pub async fn run(ctx: &Context<'_>, args: &RollbackArgs) -> Result<Outcome, Error> {
    let super::PastRun {
        journal,
        row,
        params,
        config,
    } = super::past_run(
        ctx,
        &args.run,
        args.config.as_ref(),
        "whose backups can be rolled back to",
    )?;
    let mut landing_zones = landing_zones_of(&row.id, &row.landing_zones, &params, &config, args)?;
    params.guard_recorded(&mut landing_zones, &row.environment);
    let witnesses = journal.backup_witnesses(&row.id)?;
    let rollback_id = RunId::generate(chrono::Utc::now()).to_string();
    let lz_names: Vec<String> = landing_zones.iter().map(|l| l.name.clone()).collect();
    let op = Operation::begin(
        &journal,
        &NewRun {
            id: &rollback_id,
            kind: "rollback",
            of_run: Some(&row.id),
            landing_zones: &lz_names,
            environment: &environments_of(&landing_zones),
            params: &serde_json::json!({
                "run": row.id,
                "instances": args.instances,
                "all": args.all,
                "start": args.start,
                "delete_replaced_volume": args.delete_replaced_volume,
                "dry_run": args.dry_run,
            })
            .to_string(),
            simulated: false,
            dry_run: args.dry_run,
        },
        &landing_zones,
        !args.dry_run,
    )?;
    let profile = args.profile.clone().or(params.profile.clone());
    let cloud = connect_aws(profile, &config).await;
    let dir = ctx
        .cli
        .output
        .output_dir
        .join(&row.id)
        .join(format!("rollback-{rollback_id}"));
    let result = rollback_with(
        &cloud,
        &op,
        &config,
        &landing_zones,
        &witnesses,
        &row.id,
        args,
        &dir,
    )
    .await;
    let what = format!("rollback to run {}", row.id);
    op.conclude(&config, &what, result, &dir).await
}

/// The run's landing zones (those named with `--landing-zones`, which must
/// be the run's), on the restore role, in the run's regions.
fn landing_zones_of(
    run_id: &str,
    run_landing_zones: &str,
    params: &RunParams,
    config: &Config,
    args: &RollbackArgs,
) -> Result<Vec<LandingZone>, Error> {
    let of_run: Vec<&str> = run_landing_zones
        .split(',')
        .filter(|n| !n.is_empty())
        .collect();
    for name in &args.landing_zones {
        if !of_run.contains(&name.as_str()) {
            return Err(Error::Usage(format!(
                "landing zone {name} is not one of run {run_id}'s ({})",
                of_run.join(", ")
            )));
        }
    }
    let mut out = Vec::new();
    for name in of_run {
        if !args.landing_zones.is_empty() && !args.landing_zones.iter().any(|n| n == name) {
            continue;
        }
        let Some(lz) = config.landing_zone(name) else {
            return Err(Error::Usage(format!(
                "landing zone {name} of run {run_id} is not in {}",
                config.source.display()
            )));
        };
        let mut lz = lz.clone().with_restore_role();
        if !params.regions.is_empty() {
            lz.regions = params
                .regions
                .iter()
                .filter_map(|r| r.trim().parse::<Region>().ok())
                .collect();
        }
        out.push(lz);
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn rollback_with<C: Cloud>(
    cloud: &Paced<C>,
    op: &Operation,
    config: &Config,
    landing_zones: &[LandingZone],
    witnesses: &Witnesses,
    run_id: &str,
    args: &RollbackArgs,
    dir: &Path,
) -> Result<(Outcome, String), Error> {
    let rollback_id = op.id.as_str();
    let jc = Journaled::new(cloud, &op.journal, rollback_id);
    let session = format!("prepatch-{rollback_id}");
    let wanted = Wanted {
        instances: args.instances.iter().cloned().collect(),
    };
    let settings = Settings {
        start: args.start,
        delete_replaced: args.delete_replaced_volume,
        start_timeout: config.phases.server_start.wait_timeout,
        check_timeout: config.phases.validation.timeout,
    };
    let mut plans = plan(
        &jc,
        landing_zones,
        run_id,
        witnesses,
        &wanted,
        args.start,
        &session,
    )
    .await;
    let mut out = crate::console::stdout();
    let w = super::stdout_error;
    write_summary(run_id, rollback_id, &plans, false, &mut out).map_err(w)?;
    let missing = missing(&plans, &wanted);
    for i in &missing {
        writeln!(out, "  {i}: no backup of run {run_id} in its landing zones").map_err(w)?;
    }
    let guarded = super::needs_confirmation(landing_zones);
    let planned = |only_guarded: bool| {
        plans
            .iter()
            .filter(|p| !only_guarded || guarded.contains(p.target.landing_zone.as_str()))
            .flat_map(|p| &p.rows)
            .filter(|r| r.action == Action::WouldRollBack)
            .count()
    };
    let applied = !args.dry_run && planned(false) > 0;
    if args.dry_run {
        probe(&jc, &mut plans, run_id, &settings).await;
        writeln!(out, "dry run: DryRun checks only, nothing changed:").map_err(w)?;
        write_summary(run_id, rollback_id, &plans, false, &mut out).map_err(w)?;
    } else if applied {
        let guarded_count = planned(true);
        if guarded_count > 0 && !args.yes {
            let what = format!(
                "this rollback replaces the root volume of {guarded_count} instances in landing zone(s) that need confirmation ({}) with run {run_id}'s backups",
                super::names_of(&guarded)
            );
            if let Confirmation::No(why) = super::confirm(&what, super::interactive()) {
                return Err(Error::Refused(why));
            }
        }
        apply_until(&jc, &mut plans, run_id, &settings, &op.shutdown).await;
        writeln!(out, "done:").map_err(w)?;
        write_summary(run_id, rollback_id, &plans, true, &mut out).map_err(w)?;
    }
    crate::report::rollback::write(dir, run_id, rollback_id, applied, &plans)?;
    writeln!(out, "reports: {}", dir.display()).map_err(w)?;
    let failures = !missing.is_empty()
        || plans.iter().any(|p| p.error.is_some())
        || plans.iter().flat_map(|p| &p.rows).any(|r| {
            matches!(r.action, Action::Failed | Action::Refused | Action::NotDone)
                || r.verdict == Verdict::NotReady
        });
    Ok((
        Outcome {
            failures,
            interrupted: op.shutdown.requested(),
        },
        summary_line(&plans, applied),
    ))
}

/// The instances named that no account-region has a backup of.
pub fn missing(plans: &[TargetPlan], wanted: &Wanted) -> Vec<String> {
    let found: BTreeSet<&str> = plans
        .iter()
        .flat_map(|p| &p.rows)
        .map(|r| r.instance_id.as_str())
        .collect();
    wanted
        .instances
        .iter()
        .filter(|i| !found.contains(i.as_str()))
        .cloned()
        .collect()
}
