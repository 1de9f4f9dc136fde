//! Phase 3: start what was stopped, so patching can reach it.
//!
//! Only instances whose AMI from this run exists are started
//! (`server_start.require_backup`, on by default): nothing is touched
//! before its backup. When the backup phase did not run in this process
//! (`--phase server-start`, a rerun), the run's AMIs are looked up by tag. `StartInstances` takes up to
//! [`START_BATCH`] ids per call; when a call fails, the instances it names
//! fail alone and the rest are retried, and an error that names none is
//! narrowed down by halving the batch. Only what AWS's answer says was
//! `stopped` just before the call is started by this run (someone else may
//! have started it a moment earlier); those alone are tagged
//! `prepatch:started-by=<run-id>` after the start succeeds, so
//! `prepatch restore` can stop exactly these and nothing else (a lost tag
//! leaves an instance running, which is the safe side). Waiting is one paginated
//! `DescribeInstances` per account-region per poll.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::poll::Polls;
use super::progress::plural;
use super::{Tally, Workflow};
use crate::cloud::{CloudError, Scope};
use crate::model::{Failure, InstanceId, InstanceState, Start, StateChange, tag};
use crate::model::{Phase, TargetRun};

/// Instance ids per `StartInstances` call.
pub const START_BATCH: usize = 100;
/// The longest gap between two looks at instances starting ([`Polls`]).
const POLL_MAX: Duration = Duration::from_secs(20);

/// States that the start phase acts on.
pub fn wants_start(state: InstanceState) -> bool {
    matches!(state, InstanceState::Stopped | InstanceState::Stopping)
}

/// Phase 3 in one account-region: what was stopped is started once its
/// AMI exists (`backup_ran`: this run backed up), and waited on.
pub(super) async fn start_target(wf: &Workflow<'_>, t: &mut TargetRun, backup_ran: bool) -> Tally {
    let require_backup = wf.config.phases.server_start.require_backup;
    let wants_any = t.records.iter().any(|r| wants_start(r.instance.state));
    if require_backup && !backup_ran && wants_any {
        adopt_earlier_backups(wf, t).await;
    }
    let mut tally = Tally::default();
    let wanted = select(wf, t, &mut tally);
    if wanted.is_empty() {
        return tally;
    }
    let bar = wf
        .progress
        .bar(Phase::ServerStart, &t.target, wanted.len() as u64);
    let timeout = wf.config.phases.server_start.wait_timeout;
    let mut errors: BTreeMap<InstanceId, Failure> = BTreeMap::new();
    let (mut states, startable) = startable(wf, t, &wanted, timeout, &mut errors).await;
    let sent = send_starts(wf, t, &startable, &mut errors).await;

    // Wait for `running`, watching only what was started (by anyone).
    let started_set: BTreeSet<&InstanceId> = sent.started.iter().collect();
    let mut running: Observed = sent
        .started
        .iter()
        .map(|id| (id.clone(), Seen::new(InstanceState::Pending)))
        .chain(
            sent.raced
                .iter()
                .map(|c| (c.id.clone(), Seen::new(c.current))),
        )
        .collect();
    if !running.is_empty() {
        // The wait counts from the last StartInstances: with thousands to
        // start, EC2's bucket spreads the sends over half an hour.
        let polls = Polls::new(timeout, POLL_MAX);
        let waiting = |n: usize, waited: Duration| {
            bar.waiting(&format!("{} to run", plural(n, "instance")), waited)
        };
        poll_states(wf, t, &mut running, &polls, waiting, |s| {
            s != InstanceState::Pending && s != InstanceState::Stopped
        })
        .await;
    }
    states.extend(running);

    for &i in &wanted {
        let r = &mut t.records[i];
        let seen = states
            .get(&r.instance.id)
            .copied()
            .unwrap_or(Seen::new(r.instance.state));
        let id = &r.instance.id;
        let was_started = started_set.contains(id);
        let mut start = outcome(
            wf,
            r.instance.state,
            seen.state,
            was_started,
            errors.remove(id),
        );
        start.started_at = sent.started_at.get(id).copied();
        start.running_at = seen.running_at;
        start.launched_at = seen.launched_at.filter(|_| was_started);
        if start.error.is_none() {
            tally.done += 1;
        } else {
            tally.failed += 1;
        }
        r.start = Some(start);
        bar.inc(1);
    }
    bar.finish(format!("{} started, {} failed", tally.done, tally.failed));
    tally
}

/// The wanted instances' states, and those that can be started now:
/// `stopping` ones are waited on until `stopped`; any other state is kept
/// in `errors`.
async fn startable(
    wf: &Workflow<'_>,
    t: &TargetRun,
    wanted: &[usize],
    timeout: Duration,
    errors: &mut BTreeMap<InstanceId, Failure>,
) -> (Observed, Vec<InstanceId>) {
    // `stopping` instances must reach `stopped` before they can be started.
    let mut states: Observed = wanted
        .iter()
        .map(|&i| {
            (
                t.records[i].instance.id.clone(),
                Seen::new(t.records[i].instance.state),
            )
        })
        .collect();
    if states.values().any(|s| s.state == InstanceState::Stopping) {
        let polls = Polls::new(timeout, POLL_MAX);
        let quiet = |_: usize, _: Duration| {};
        poll_states(wf, t, &mut states, &polls, quiet, |s| {
            s != InstanceState::Stopping
        })
        .await;
    }

    let startable: Vec<InstanceId> = states
        .iter()
        .filter(|(id, seen)| {
            let s = seen.state;
            if s == InstanceState::Stopped {
                return true;
            }
            errors.insert(
                (*id).clone(),
                Failure::new(format!("not started: it is {s}, not stopped")),
            );
            false
        })
        .map(|(id, _)| id.clone())
        .collect();
    (states, startable)
}

/// One `DescribeImages` finds this run's AMIs from an earlier attempt
/// (`--phase server-start` after a backup run).
async fn adopt_earlier_backups(wf: &Workflow<'_>, t: &mut TargetRun) {
    // One DescribeImages finds this run's AMIs from an earlier attempt.
    match super::backup::own_images(wf, &t.target).await {
        Ok(images) => {
            for r in &mut t.records {
                if let Some(image) = images.get(&r.instance.id) {
                    r.backup = Some(crate::model::Backup {
                        ami: Some(image.id.clone()),
                        state: Some(image.state),
                        snapshot_ids: image.snapshot_ids.to_vec(),
                        reused: true,
                        ..Default::default()
                    });
                }
            }
        }
        Err(e) => wf.event(
            Phase::ServerStart,
            &t.target,
            format!("cannot look up this run's AMIs: {e}"),
        ),
    }
}

/// The instances to start: stopped (or stopping), and backed up if the
/// config requires it. Says why of each left alone; an instance an
/// earlier attempt of this run started is recorded as this run's.
fn select(wf: &Workflow<'_>, t: &mut TargetRun, tally: &mut Tally) -> Vec<usize> {
    let run_id = wf.options.run_id.as_str();
    let require_backup = wf.config.phases.server_start.require_backup;
    let mut wanted: Vec<usize> = Vec::new();
    for (i, r) in t.records.iter_mut().enumerate() {
        let state = r.instance.state;
        // The journal says an earlier attempt started it; its tag agrees.
        let mine =
            r.instance.tag(tag::STARTED_BY) == Some(run_id) && wf.witnesses.started(&r.instance.id);
        if !wants_start(state) {
            // Running already; if an earlier attempt of this run started it, say so.
            if mine {
                r.start = Some(Start {
                    initial_state: InstanceState::Stopped,
                    final_state: state,
                    started_by_run: true,
                    started_at: None,
                    running_at: None,
                    launched_at: None,
                    error: None,
                });
            }
            continue;
        }
        if let (Some(group), false) = (
            r.instance.auto_scaling_group(),
            wf.config.phases.server_start.auto_scaling_members,
        ) {
            // A stopped member is in Standby or a warm pool
            // (`Warmed:Stopped`): its group decides when it runs (EC2
            // Auto Scaling user guide, "Warm pools", "Temporarily remove
            // instances from your Auto Scaling group").
            r.start = Some(not_started(
                state,
                &format!(
                    "not started: it belongs to Auto Scaling group {group:?}, which owns its state (Standby or a warm pool); set workflow.phases.server_start.auto_scaling_members: true to start it anyway"
                ),
            ));
            tally.skipped += 1;
            continue;
        }
        if require_backup && !r.backup.as_ref().is_some_and(|b| b.exists()) {
            r.start = Some(not_started(
                state,
                "not started: it has no AMI from this run (back it up first, or set workflow.phases.server_start.require_backup: false)",
            ));
            tally.skipped += 1;
            continue;
        }
        wanted.push(i);
    }
    wanted
}

/// What the `StartInstances` calls were answered.
struct Sent {
    /// When each instance's `StartInstances` succeeded.
    started_at: BTreeMap<InstanceId, DateTime<Utc>>,
    /// Started by this run: `stopped` before the call.
    started: Vec<InstanceId>,
    /// Not this run's: someone else started it a moment before.
    raced: Vec<StateChange>,
}

/// Starts `startable` in batches, tagging what this run started; a
/// failure is kept in `errors` for its instance.
async fn send_starts(
    wf: &Workflow<'_>,
    t: &TargetRun,
    startable: &[InstanceId],
    errors: &mut BTreeMap<InstanceId, Failure>,
) -> Sent {
    let run_id = wf.options.run_id.as_str();
    let mut started_at: BTreeMap<InstanceId, DateTime<Utc>> = BTreeMap::new();
    let mut started: Vec<InstanceId> = Vec::new();
    let mut raced: Vec<StateChange> = Vec::new();
    for batch in startable.chunks(START_BATCH) {
        if wf.shutdown.requested() {
            for id in batch {
                errors.insert(
                    id.clone(),
                    Failure::new("interrupted before StartInstances"),
                );
            }
            continue;
        }
        let (changes, failed) = start_isolating(wf, t, batch.to_vec()).await;
        let now = wf.clock.now();
        let (ok, others): (Vec<StateChange>, Vec<StateChange>) = changes
            .into_iter()
            .partition(|c| c.previous == InstanceState::Stopped);
        let ok: Vec<InstanceId> = ok.into_iter().map(|c| c.id).collect();
        for c in &others {
            wf.event(
                Phase::ServerStart,
                &c.id,
                format!(
                    "not started by this run: it was {} when StartInstances reached it (someone else started it)",
                    c.previous
                ),
            );
        }
        raced.extend(others);
        started_at.extend(ok.iter().map(|id| (id.clone(), now)));
        if !ok.is_empty() {
            let ids: Vec<String> = ok.iter().map(|i| i.as_str().to_owned()).collect();
            let tags = vec![(tag::STARTED_BY.to_owned(), run_id.to_owned())];
            if let Err(e) = wf.cloud.create_tags(&t.target, &ids, &tags).await {
                wf.event(
                    Phase::ServerStart,
                    &t.target,
                    format!("tagging started instances failed: {e}"),
                );
            }
            wf.event(
                Phase::ServerStart,
                &t.target,
                format!("started {} instances", ok.len()),
            );
        }
        for (id, e) in failed {
            wf.event(Phase::ServerStart, &id, format!("start failed: {e}"));
            errors.insert(id, Failure::from(e));
        }
        started.extend(ok);
    }
    Sent {
        started_at,
        started,
        raced,
    }
}

/// An instance's start as the run ends it: started by this run or not,
/// its final state, and its failure if any (its times are the caller's).
fn outcome(
    wf: &Workflow<'_>,
    initial_state: InstanceState,
    final_state: InstanceState,
    was_started: bool,
    mut error: Option<Failure>,
) -> Start {
    if was_started && final_state != InstanceState::Running && error.is_none() {
        error = Some(Failure::new(format!(
            "started, but {final_state} after {}s",
            wf.config.phases.server_start.wait_timeout.as_secs()
        )));
    }
    Start {
        initial_state,
        final_state,
        started_by_run: was_started,
        started_at: None,
        running_at: None,
        launched_at: None,
        error,
    }
}

fn not_started(state: InstanceState, why: &str) -> Start {
    Start {
        initial_state: state,
        final_state: state,
        started_by_run: false,
        started_at: None,
        running_at: None,
        launched_at: None,
        error: Some(Failure::new(why)),
    }
}

/// Starts `ids`, isolating the instances that make a call fail
/// ([`crate::cloud::isolating`]).
async fn start_isolating(
    wf: &Workflow<'_>,
    t: &TargetRun,
    ids: Vec<InstanceId>,
) -> (Vec<StateChange>, Vec<(InstanceId, CloudError)>) {
    crate::cloud::isolating(ids, |batch| async move {
        wf.cloud.start_instances(&t.target, &batch).await
    })
    .await
}

/// The latest state of watched instances, and when each was first seen running.
type Observed = BTreeMap<InstanceId, Seen>;

/// What the looks saw of one instance.
#[derive(Clone, Copy, Debug)]
struct Seen {
    state: InstanceState,
    /// When it was first seen running.
    running_at: Option<DateTime<Utc>>,
    /// EC2's `LaunchTime` then: the time of the start that made it run.
    launched_at: Option<DateTime<Utc>>,
}

impl Seen {
    fn new(state: InstanceState) -> Seen {
        Seen {
            state,
            running_at: None,
            launched_at: None,
        }
    }
}

/// One `DescribeInstances` (all pages) per look on the `polls` schedule,
/// until every watched instance satisfies `done` or is gone, or the
/// deadline passes. Before each sleep, `waiting` is told how many are
/// left and how long they have been waited on.
async fn poll_states(
    wf: &Workflow<'_>,
    t: &TargetRun,
    seen: &mut Observed,
    polls: &Polls,
    waiting: impl Fn(usize, Duration),
    done: impl Fn(InstanceState) -> bool,
) {
    loop {
        let left = seen
            .values()
            .filter(|s| !done(s.state) && !s.state.is_gone())
            .count();
        waiting(left, polls.waited());
        if !polls.wait(&wf.shutdown).await {
            return;
        }
        let answer = match wf.cloud.describe_instances(&t.target, Scope::All).await {
            Ok(answer) => answer,
            Err(e) => {
                tracing::warn!(target_ = %t.target, error = %e, "DescribeInstances failed; will poll again");
                continue;
            }
        };
        let now: BTreeMap<&InstanceId, &crate::model::Instance> =
            answer.iter().map(|i| (&i.id, i)).collect();
        let at = wf.clock.now();
        for (id, s) in seen.iter_mut() {
            // An instance missing from the answer is gone.
            let found = now.get(id);
            s.state = found.map_or(InstanceState::Terminated, |i| i.state);
            if s.state == InstanceState::Running && s.running_at.is_none() {
                s.running_at = Some(at);
                s.launched_at = found.and_then(|i| i.launch_time);
            }
        }
        if seen.values().all(|s| done(s.state) || s.state.is_gone()) {
            return;
        }
    }
}
