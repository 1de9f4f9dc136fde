//! `prepatch restore --run <id>`: after patching, put the fleet back as it
//! was before the run: stop exactly the instances that run started.
//!
//! Two witnesses must agree that the run started an instance: the journal
//! (a successful `StartInstances` of that run naming it) and the instance's
//! own `prepatch:started-by=<run-id>` tag. An instance that only one of
//! them names, whose tag names another run, or that someone else started,
//! is left alone and reported: stopping a server that should run is the
//! worse mistake. Stopped instances lose the tag (`DeleteTags` with the
//! value, so only this run's tag goes). Every call is journaled.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use super::{Context, Operation, connect_aws, environments_of};
use crate::cli::RestoreArgs;
use crate::cloud::limit::Paced;
use crate::cloud::{Cloud, Scope};
use crate::config::{Config, LandingZone};
use crate::journal::{Journaled, NewRun, RunParams, RunRow};
use crate::model::{Instance, InstanceId, InstanceState, Region, RunId, Target, tag};
use crate::workflow::poll::Polls;
use crate::workflow::{Confirmation, Shutdown, for_each_target};
use crate::{Error, Outcome};

/// Instance ids per `StopInstances` call.
pub const STOP_BATCH: usize = 100;
/// The longest gap between two looks at instances stopping ([`Polls`]).
const POLL_MAX: Duration = Duration::from_secs(20);

pub use crate::journal::{StartTime, Started};
pub use crate::model::restore::{Action, Row, TargetPlan, counts, summary_line};

/// Looks at every target of `landing_zones`: which instances the journal
/// and the tag both say `run_id` started. One `DescribeInstances` per
/// account-region; roles are assumed first.
pub async fn plan(
    cloud: &dyn Cloud,
    landing_zones: &[LandingZone],
    started: &Started,
    run_id: &str,
    session_name: &str,
) -> Vec<TargetPlan> {
    super::for_each_region(cloud, landing_zones, session_name, |lz, region, assumed| {
        plan_target(cloud, lz, region, assumed, started, run_id)
    })
    .await
}

/// How far EC2's `LaunchTime` may lie after the journal's record of the
/// run's start (written once AWS answered) and still be that start, when
/// the run never saw the `LaunchTime` its start left: the clocks of the
/// runner and of AWS differ by a little.
pub const LAUNCH_TIME_SLACK: chrono::Duration = chrono::Duration::minutes(2);

/// One account-region's plan.
async fn plan_target(
    cloud: &dyn Cloud,
    lz: &LandingZone,
    region: &Region,
    assumed: Result<(), crate::cloud::CloudError>,
    started: &Started,
    run_id: &str,
) -> TargetPlan {
    let target = Target {
        landing_zone: lz.name.clone(),
        account: lz.account_id.clone(),
        region: region.clone(),
    };
    let key = (
        lz.name.clone(),
        lz.account_id.to_string(),
        region.to_string(),
    );
    let journal_ids: BTreeSet<&InstanceId> =
        started.by_target.get(&key).into_iter().flatten().collect();
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
    let instances = match cloud.describe_instances(&target, Scope::All).await {
        Ok(i) => i,
        Err(e) => {
            p.error = Some(e.to_string());
            return p;
        }
    };
    let by_id: BTreeMap<&InstanceId, &Instance> = instances.iter().map(|i| (&i.id, i)).collect();
    let row = |id: &InstanceId, action: Action, reason: String| {
        let i = by_id.get(id);
        Row {
            landing_zone: lz.name.clone(),
            account: lz.account_id.to_string(),
            region: region.to_string(),
            environment: lz.environment.clone(),
            instance_id: id.to_string(),
            name: i.and_then(|i| i.name()).unwrap_or_default().to_owned(),
            action,
            state_before: i.map_or("not found".into(), |i| i.state.to_string()),
            state_after: i.map_or("not found".into(), |i| i.state.to_string()),
            in_journal: journal_ids.contains(id),
            tag: i
                .and_then(|i| i.tag(tag::STARTED_BY))
                .unwrap_or_default()
                .to_owned(),
            tag_removed: false,
            reason,
        }
    };
    for id in &journal_ids {
        let found = by_id.get(id).copied();
        let (action, reason) = decide(found, run_id, started.time(id));
        p.rows.push(row(id, action, reason));
    }
    for i in &instances {
        if i.tag(tag::STARTED_BY) == Some(run_id) && !journal_ids.contains(&i.id) {
            p.rows.push(row(
                &i.id,
                Action::LeftAlone,
                "tagged as started by this run, but the journal has no start of it".into(),
            ));
        }
    }
    p
}

/// What restore does with an instance the journal says the run started:
/// stop it only if its tag agrees, it is running, and EC2's `LaunchTime`
/// is that start's (`started`: the `LaunchTime` the run saw after it,
/// exactly, or else the journal's time of its answer, within
/// [`LAUNCH_TIME_SLACK`]); say why otherwise.
/// `LaunchTime` moves with every start (EC2 API reference, `Instance`:
/// "the time the instance was launched"; EC2 user guide, "Stop and start
/// Amazon EC2 instances"), so a later one means someone started the
/// server again since: it is theirs now, whatever the tag says; an earlier
/// one is a launch before the run's, not the one it made.
fn decide(found: Option<&Instance>, run_id: &str, started: Option<StartTime>) -> (Action, String) {
    let Some(i) = found else {
        return (Action::LeftAlone, "not found in EC2".into());
    };
    if i.state.is_gone() {
        return (Action::LeftAlone, format!("it is {}", i.state));
    }
    match i.tag(tag::STARTED_BY) {
        None => {
            return (
                Action::LeftAlone,
                format!(
                    "the journal says this run started it, but it has no {} tag",
                    tag::STARTED_BY
                ),
            );
        }
        Some(v) if v != run_id => {
            return (
                Action::LeftAlone,
                format!("its {} tag is {v:?}, not this run", tag::STARTED_BY),
            );
        }
        Some(_) => {}
    }
    match i.state {
        InstanceState::Stopped | InstanceState::Stopping => {
            return (Action::AlreadyStopped, String::new());
        }
        InstanceState::Running | InstanceState::Pending => {}
        s => return (Action::LeftAlone, format!("it is {s}")),
    }
    let time =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (Some(launched), Some(start)) = (i.launch_time, started) else {
        return (
            Action::LeftAlone,
            "EC2's LaunchTime cannot be held against the run's start (one of them is unknown)"
                .into(),
        );
    };
    let (at, slack) = match start {
        StartTime::Launched(at) => (at, chrono::Duration::zero()),
        StartTime::Answered(at) => (at, LAUNCH_TIME_SLACK),
    };
    if launched > at + slack {
        return (
            Action::LeftAlone,
            format!(
                "started again since this run started it: EC2's LaunchTime {} is after the run's start at {}",
                time(launched),
                time(at)
            ),
        );
    }
    if launched < at - slack {
        return (
            Action::LeftAlone,
            format!(
                "EC2's LaunchTime {} is before the run's start at {}: not the launch the run made",
                time(launched),
                time(at)
            ),
        );
    }
    (Action::WouldStop, String::new())
}

/// Stops what the plan says, waits for `stopped` (one `DescribeInstances`
/// per account-region per poll), then removes this run's tag from what is
/// stopped.
pub async fn apply(cloud: &dyn Cloud, plans: &mut [TargetPlan], run_id: &str, wait: Duration) {
    apply_until(cloud, plans, run_id, wait, &Shutdown::never()).await
}

/// [`apply`] on every account-region at once, until `shutdown`: then no
/// stop is sent any more, the waits end, and what is stopped by then loses
/// its tag; the rest is reported as not done.
pub async fn apply_until(
    cloud: &dyn Cloud,
    plans: &mut [TargetPlan],
    run_id: &str,
    wait: Duration,
    shutdown: &Shutdown,
) {
    for_each_target(plans, |p| apply_target(cloud, p, run_id, wait, shutdown)).await;
}

async fn apply_target(
    cloud: &dyn Cloud,
    p: &mut TargetPlan,
    run_id: &str,
    wait: Duration,
    shutdown: &Shutdown,
) {
    if p.error.is_some() {
        return;
    }
    wait_out_pending(cloud, p, wait, shutdown).await;
    let asked = send_stops(cloud, p, shutdown).await;
    let states = wait_stopped(cloud, &p.target, &asked, wait, shutdown).await;
    for r in p.rows.iter_mut().filter(|r| r.action == Action::WouldStop) {
        let state = states.get(&r.instance_id).copied();
        r.state_after = state.map_or("unknown".into(), |s| s.to_string());
        if state == Some(InstanceState::Stopped) {
            r.action = Action::Stopped;
        } else {
            r.action = Action::Failed;
            r.reason = if shutdown.requested() {
                format!("asked to stop; {} when interrupted", r.state_after)
            } else {
                format!(
                    "asked to stop, but {} after {}s",
                    r.state_after,
                    wait.as_secs()
                )
            };
        }
    }
    untag(cloud, p, run_id).await;
}

/// Sends the stops in batches; each judged by AWS's answer. Returns what
/// was asked to stop while running: this restore's to wait on.
async fn send_stops(
    cloud: &dyn Cloud,
    p: &mut TargetPlan,
    shutdown: &Shutdown,
) -> BTreeSet<String> {
    let t = p.target.clone();
    let mut asked: BTreeSet<String> = BTreeSet::new();
    let to_stop: Vec<usize> = (0..p.rows.len())
        .filter(|&i| p.rows[i].action == Action::WouldStop)
        .collect();
    for batch in to_stop.chunks(STOP_BATCH) {
        if shutdown.requested() {
            for &i in batch {
                p.rows[i].action = Action::Failed;
                p.rows[i].reason = "not stopped: interrupted before StopInstances was sent".into();
            }
            continue;
        }
        let ids: Vec<InstanceId> = batch
            .iter()
            .map(|&i| InstanceId::new(p.rows[i].instance_id.clone()))
            .collect();
        // One instance EC2 cannot stop fails the whole call: it fails
        // alone, the rest are stopped.
        let t = &t;
        let (changes, failed) =
            crate::cloud::isolating(
                ids,
                |ids| async move { cloud.stop_instances(t, &ids).await },
            )
            .await;
        let failed: BTreeMap<String, crate::cloud::CloudError> = failed
            .into_iter()
            .map(|(id, e)| (id.to_string(), e))
            .collect();
        // Each stop judged by AWS's answer: one that was no longer
        // running when the call reached it was stopped by someone else,
        // and is not this restore's.
        let previous: BTreeMap<&str, InstanceState> = changes
            .iter()
            .map(|c| (c.id.as_str(), c.previous))
            .collect();
        for &i in batch {
            let r = &mut p.rows[i];
            if let Some(e) = failed.get(&r.instance_id) {
                r.action = Action::Failed;
                r.reason = format!("StopInstances failed: {e}");
                continue;
            }
            match previous.get(r.instance_id.as_str()) {
                Some(InstanceState::Running | InstanceState::Pending) => {
                    asked.insert(r.instance_id.clone());
                }
                Some(s @ (InstanceState::Stopping | InstanceState::Stopped)) => {
                    r.action = Action::AlreadyStopped;
                    r.state_after = s.to_string();
                    r.reason = format!(
                        "it was {s} when StopInstances reached it: stopped by someone else"
                    );
                }
                other => {
                    r.action = Action::Failed;
                    r.reason = match other {
                        Some(s) => format!("StopInstances found it {s}"),
                        None => "StopInstances did not answer for it".into(),
                    };
                }
            }
        }
    }
    asked
}

/// Instances to stop that are still `pending` are waited on until they
/// run (EC2 cannot stop a pending instance, and one such id fails a whole
/// `StopInstances`); one still pending after `wait` is left alone, with
/// the reason.
async fn wait_out_pending(
    cloud: &dyn Cloud,
    p: &mut TargetPlan,
    wait: Duration,
    shutdown: &Shutdown,
) {
    let pending = InstanceState::Pending.to_string();
    let waiting: BTreeSet<String> = p
        .rows
        .iter()
        .filter(|r| r.action == Action::WouldStop && r.state_before == pending)
        .map(|r| r.instance_id.clone())
        .collect();
    if waiting.is_empty() {
        return;
    }
    let states = wait_for(cloud, &p.target, &waiting, wait, shutdown, |s| {
        s != InstanceState::Pending
    })
    .await;
    for r in p
        .rows
        .iter_mut()
        .filter(|r| waiting.contains(&r.instance_id))
    {
        match states.get(&r.instance_id) {
            Some(InstanceState::Running) => {}
            Some(InstanceState::Stopped | InstanceState::Stopping) => {
                r.action = Action::AlreadyStopped;
                r.state_after = states[&r.instance_id].to_string();
                r.reason = "it was stopped by someone else while pending".into();
            }
            other => {
                r.action = Action::LeftAlone;
                r.reason = format!(
                    "still {} after {}s: not stopped (EC2 cannot stop a pending instance)",
                    other.map_or("pending".into(), ToString::to_string),
                    wait.as_secs()
                );
            }
        }
    }
}

/// Waits until what was asked to stop is stopped (or gone), `wait` at the
/// most; the states last seen.
async fn wait_stopped(
    cloud: &dyn Cloud,
    t: &Target,
    asked: &BTreeSet<String>,
    wait: Duration,
    shutdown: &Shutdown,
) -> BTreeMap<String, InstanceState> {
    wait_for(cloud, t, asked, wait, shutdown, |s| {
        s == InstanceState::Stopped || s.is_gone()
    })
    .await
}

/// One `DescribeInstances` a look on the [`Polls`] schedule until every
/// instance of `ids` is in a state `done` accepts, `wait` at the most;
/// the states last seen.
async fn wait_for(
    cloud: &dyn Cloud,
    t: &Target,
    ids: &BTreeSet<String>,
    wait: Duration,
    shutdown: &Shutdown,
    done: impl Fn(InstanceState) -> bool,
) -> BTreeMap<String, InstanceState> {
    let polls = Polls::new(wait, POLL_MAX);
    let mut states: BTreeMap<String, InstanceState> = BTreeMap::new();
    while !ids.is_empty() && polls.wait(shutdown).await {
        match cloud.describe_instances(t, Scope::All).await {
            Ok(all) => {
                states = all
                    .into_iter()
                    .filter(|i| ids.contains(i.id.as_str()))
                    .map(|i| (i.id.to_string(), i.state))
                    .collect();
            }
            Err(e) => {
                tracing::warn!(target_ = %t, error = %e, "DescribeInstances failed; will poll again")
            }
        }
        if ids
            .iter()
            .all(|id| states.get(id).is_some_and(|s| done(*s)))
        {
            break;
        }
    }
    states
}

/// The tag goes from what is stopped now, this run's value only.
async fn untag(cloud: &dyn Cloud, p: &mut TargetPlan, run_id: &str) {
    let t = &p.target;
    let untag: Vec<usize> = (0..p.rows.len())
        .filter(|&i| matches!(p.rows[i].action, Action::Stopped | Action::AlreadyStopped))
        .collect();
    let mine = vec![(tag::STARTED_BY.to_owned(), run_id.to_owned())];
    for chunk in untag.chunks(1000) {
        let ids: Vec<String> = chunk
            .iter()
            .map(|&i| p.rows[i].instance_id.clone())
            .collect();
        match cloud.delete_tags(t, &ids, &mine).await {
            Ok(()) => {
                for &i in chunk {
                    p.rows[i].tag_removed = true;
                }
            }
            Err(e) => {
                for &i in chunk {
                    p.rows[i].reason = format!("stopped, but removing the tag failed: {e}");
                }
            }
        }
    }
}

/// Prints the summary and the instances left alone or failed.
pub fn write_summary(
    run_id: &str,
    restore_id: &str,
    plans: &[TargetPlan],
    dry_run: bool,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    crate::oneline!(out, "restore of run {run_id} (restore id {restore_id})")?;
    crate::oneline!(out, "  {}", summary_line(plans, dry_run))?;
    for p in plans {
        if let Some(e) = &p.error {
            crate::oneline!(out, "  {} ({}): {e}", p.target, p.target.account)?;
        }
        for r in &p.rows {
            let show = match r.action {
                Action::WouldStop => "would stop",
                Action::Stopped => "stopped",
                Action::AlreadyStopped => "already stopped",
                Action::LeftAlone => "LEFT ALONE",
                Action::Failed => "FAILED",
            };
            let reason = if r.reason.is_empty() {
                String::new()
            } else {
                format!(": {}", r.reason)
            };
            crate::oneline!(
                out,
                "  {show:<15} {} ({} {}/{}){reason}",
                r.instance_id,
                r.landing_zone,
                r.account,
                r.region
            )?;
        }
    }
    Ok(())
}

/// `prepatch restore --run <id>`.
pub async fn run(ctx: &Context<'_>, args: &RestoreArgs) -> Result<Outcome, Error> {
    let cli = ctx.cli;
    let super::PastRun {
        journal,
        row,
        params,
        config,
    } = super::past_run(
        ctx,
        &args.run,
        args.config.as_ref(),
        "whose starts can be restored",
    )?;
    // The LaunchTimes the run saw after its starts, from its saved state
    // (none if it stopped before then: the journal's times stand in).
    let saved = crate::journal::snapshot::load(&journal, &row.id)
        .ok()
        .flatten();
    let mut started = journal.started_instances(&row.id)?;
    if let Some(run) = &saved {
        started = started.with_launch_times(run);
    }
    let mut landing_zones = landing_zones_of(&row, &params, &config, &started)?;
    // Prod by the run's record is prod: a config that now calls a landing
    // zone nonprod does not bypass the guard.
    params.guard_recorded(&mut landing_zones, &row.environment);
    let restore_id = RunId::generate(chrono::Utc::now()).to_string();
    let lz_names: Vec<String> = landing_zones.iter().map(|l| l.name.clone()).collect();
    let op = Operation::begin(
        &journal,
        &NewRun {
            id: &restore_id,
            kind: "restore",
            of_run: Some(&row.id),
            landing_zones: &lz_names,
            environment: &environments_of(&landing_zones),
            params: &serde_json::json!({"run": row.id, "dry_run": args.dry_run}).to_string(),
            simulated: false,
            dry_run: args.dry_run,
        },
        &landing_zones,
        !args.dry_run,
    )?;
    let profile = args.profile.clone().or(params.profile.clone());
    let cloud = connect_aws(profile, &config).await;
    let dir = cli
        .output
        .output_dir
        .join(&row.id)
        .join(format!("restore-{restore_id}"));
    let result = restore_with(
        &cloud,
        &op,
        &config,
        &landing_zones,
        &started,
        &row.id,
        args,
        &dir,
    )
    .await;
    let what = format!("restore of run {}", row.id);
    op.conclude(&config, &what, result, &dir).await
}

/// The run's landing zones as restore reaches them: from the config, on
/// the restore role, in the run's regions and every region the journal
/// has starts in, whatever the config says now.
fn landing_zones_of(
    row: &RunRow,
    params: &RunParams,
    config: &Config,
    started: &Started,
) -> Result<Vec<LandingZone>, Error> {
    let mut landing_zones: Vec<LandingZone> = Vec::new();
    for name in row.landing_zones.split(',').filter(|n| !n.is_empty()) {
        let Some(lz) = config.landing_zone(name) else {
            return Err(Error::Usage(format!(
                "landing zone {name} of run {} is not in {}",
                row.id,
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
        // A region the journal has starts in is looked at, whatever the config says now.
        for (l, _, region) in started.by_target.keys() {
            if *l == lz.name
                && let Ok(r) = region.parse::<Region>()
                && !lz.regions.contains(&r)
            {
                lz.regions.push(r);
            }
        }
        landing_zones.push(lz);
    }
    Ok(landing_zones)
}

#[allow(clippy::too_many_arguments)]
async fn restore_with<C: Cloud>(
    cloud: &Paced<C>,
    op: &Operation,
    config: &Config,
    landing_zones: &[LandingZone],
    started: &Started,
    run_id: &str,
    args: &RestoreArgs,
    dir: &Path,
) -> Result<(Outcome, String), Error> {
    let restore_id = op.id.as_str();
    let jc = Journaled::new(cloud, &op.journal, restore_id);
    let session = format!("prepatch-{restore_id}");
    let mut plans = plan(&jc, landing_zones, started, run_id, &session).await;
    let guarded = super::needs_confirmation(landing_zones);
    let guarded_stops = plans
        .iter()
        .filter(|p| guarded.contains(p.target.landing_zone.as_str()))
        .flat_map(|p| &p.rows)
        .filter(|r| r.action == Action::WouldStop)
        .count();
    if !args.dry_run && guarded_stops > 0 && !args.yes {
        let what = format!(
            "this restore stops {guarded_stops} instances that run {run_id} started in landing zone(s) that need confirmation ({})",
            super::names_of(&guarded)
        );
        if let Confirmation::No(why) = super::confirm(&what, super::interactive()) {
            return Err(Error::Refused(why));
        }
    }
    if !args.dry_run {
        let wait = config.phases.server_start.wait_timeout;
        apply_until(&jc, &mut plans, run_id, wait, &op.shutdown).await;
    }
    crate::report::restore::write(dir, run_id, restore_id, args.dry_run, &plans)?;
    let mut out = crate::console::stdout();
    write_summary(run_id, restore_id, &plans, args.dry_run, &mut out)
        .and_then(|()| writeln!(out, "reports: {}", dir.display()))
        .map_err(|source| Error::Write {
            path: "stdout".into(),
            source,
        })?;
    let failures = plans.iter().any(|p| p.error.is_some())
        || plans
            .iter()
            .flat_map(|p| &p.rows)
            .any(|r| r.action == Action::Failed);
    Ok((
        Outcome {
            failures,
            interrupted: op.shutdown.requested(),
        },
        summary_line(&plans, args.dry_run),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Platform;

    fn at(s: &str) -> chrono::DateTime<chrono::Utc> {
        s.parse().expect("a time")
    }

    fn running(launched: Option<&str>, tag: Option<&str>) -> Instance {
        Instance {
            id: InstanceId::new("i-1"),
            state: InstanceState::Running,
            platform: Platform::Linux,
            instance_type: "t3.micro".into(),
            private_ip: None,
            launch_time: launched.map(at),
            tags: tag
                .map(|v| (tag::STARTED_BY.to_owned(), v.to_owned()))
                .into_iter()
                .collect(),
        }
    }

    #[test]
    fn a_stop_needs_the_journals_start_the_tag_and_that_starts_launch_time() {
        let start = Some(StartTime::Launched(at("2026-12-08T10:00:00Z")));
        let answered = Some(StartTime::Answered(at("2026-12-08T10:00:30Z")));
        let mine = Some("run-1");
        let decide = |i: &Instance, s| decide(Some(i), "run-1", s).0;
        // The run's own launch: stopped.
        let own = running(Some("2026-12-08T10:00:00Z"), mine);
        assert_eq!(decide(&own, start), Action::WouldStop);
        assert_eq!(
            decide(&own, answered),
            Action::WouldStop,
            "within the slack"
        );
        // Started again since, or a launch before the run's: left alone.
        for launched in ["2026-12-08T11:00:00Z", "2026-12-07T09:00:00Z"] {
            let i = running(Some(launched), mine);
            assert_eq!(decide(&i, start), Action::LeftAlone, "{launched}");
            assert_eq!(decide(&i, answered), Action::LeftAlone, "{launched}");
        }
        // The tag alone (another run's, none, or no LaunchTime to hold
        // against the start) is not enough.
        assert_eq!(
            decide(&running(Some("2026-12-08T10:00:00Z"), Some("run-2")), start),
            Action::LeftAlone
        );
        assert_eq!(
            decide(&running(Some("2026-12-08T10:00:00Z"), None), start),
            Action::LeftAlone
        );
        assert_eq!(decide(&running(None, mine), start), Action::LeftAlone);
        assert_eq!(decide(&own, None), Action::LeftAlone);
    }
}
