//! The four phases and the order they run in.
//!
//! 1. [`scan`]: assume each landing zone's role, list instances and their
//!    SSM status per account-region.
//! 2. [`backup`]: one AMI per instance, found again by its tags on a rerun.
//! 3. [`start`]: start what was stopped, only once its AMI exists.
//! 4. [`validate`]: one verdict per instance.
//!
//! Every account-region ([`Target`]) is worked on at once, within
//! `aws.max_concurrency`; inside one, calls are batched. After the scan
//! (and the production guard, which needs all of it), each account-region
//! goes through backup, start and validation at its own pace: one whose
//! AMIs are ready starts its instances while another still waits for its
//! own. A failure belongs to its instance, target or landing zone and
//! never stops the others.

pub mod backup;
pub mod permissions;
pub mod poll;
pub mod progress;
pub mod scan;
pub mod start;
pub mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::cloud::Cloud;
use crate::config::{Config, LandingZone};
use crate::model::api::calls_since;
use crate::model::{
    Event, LandingZoneFailure, Phase, PhaseSummary, Plan, Run, RunId, TargetRun,
    run::{PhaseSpan, Slowest},
};
use progress::Progress;

/// What the operator asked for, after the CLI and config were reconciled.
#[derive(Clone, Debug)]
pub struct Options {
    pub run_id: RunId,
    pub plans: BTreeMap<Phase, Plan>,
    pub dry_run: bool,
    /// `--yes`: prod changes are confirmed.
    pub assume_yes: bool,
    /// Wait for AMIs in the backup phase (else validation waits).
    pub wait_backup: bool,
    /// May ask on the terminal.
    pub interactive: bool,
    pub show_progress: bool,
}

/// Wall time that follows tokio's clock: under a paused (simulated) clock
/// the timestamps in the reports advance with the simulation.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    wall: DateTime<Utc>,
    at: Instant,
}

impl Clock {
    pub fn start(wall: DateTime<Utc>) -> Self {
        Clock {
            wall,
            at: Instant::now(),
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        let elapsed = chrono::Duration::from_std(self.at.elapsed()).unwrap_or_default();
        self.wall + elapsed
    }
}

/// Ctrl-C: start nothing new, finish writing what is known.
#[derive(Clone, Debug)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
    /// Keeps a never-triggered channel open.
    _never: Option<std::sync::Arc<watch::Sender<bool>>>,
}

impl Shutdown {
    /// A shutdown that is triggered by the returned sender.
    pub fn new() -> (watch::Sender<bool>, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (tx, Shutdown { rx, _never: None })
    }

    /// A shutdown that never comes (tests, benchmarks).
    pub fn never() -> Shutdown {
        let (tx, rx) = watch::channel(false);
        Shutdown {
            rx,
            _never: Some(std::sync::Arc::new(tx)),
        }
    }

    pub fn requested(&self) -> bool {
        *self.rx.borrow()
    }

    /// Sleeps for `d`; false if interrupted by a shutdown.
    pub async fn sleep(&self, d: Duration) -> bool {
        let mut rx = self.rx.clone();
        tokio::select! {
            _ = tokio::time::sleep(d) => !self.requested(),
            // A closed channel (sender gone) is no shutdown: sleep on.
            Ok(_) = rx.wait_for(|v| *v) => false,
        }
    }
}

/// What phases share: the cloud, the checked config, the options, time.
pub struct Workflow<'a> {
    pub events: std::sync::Mutex<Vec<Event>>,
    pub cloud: &'a dyn Cloud,
    pub config: &'a Config,
    pub options: &'a Options,
    pub clock: Clock,
    pub shutdown: Shutdown,
    pub progress: Progress,
    /// What the journal says of this run's earlier attempts: which AMIs it
    /// made, which instances it started. Read once, before the run.
    pub witnesses: crate::model::Witnesses,
}

/// Runs work on every target (an account-region's record or plan) at once. Waiting costs nothing, so
/// no account-region waits for another's AMIs; the requests themselves are
/// bounded by `aws.max_concurrency` in [`crate::cloud::limit::Paced`].
/// Results come back in target order.
pub async fn for_each_target<'t, I, F, Fut, T>(targets: &'t mut [I], f: F) -> Vec<T>
where
    F: Fn(&'t mut I) -> Fut,
    Fut: Future<Output = T> + 't,
{
    let mut out: Vec<(usize, T)> = futures::stream::iter(targets.iter_mut().enumerate())
        .map(|(i, t)| {
            let fut = f(t);
            async move { (i, fut.await) }
        })
        .buffer_unordered(usize::MAX)
        .collect()
        .await;
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, t)| t).collect()
}

/// Counts of a phase over all targets.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tally {
    pub done: usize,
    pub failed: usize,
    pub skipped: usize,
}

impl std::ops::AddAssign for Tally {
    fn add_assign(&mut self, o: Tally) {
        self.done += o.done;
        self.failed += o.failed;
        self.skipped += o.skipped;
    }
}

/// Where the run stands, for the caller to save it as it goes.
pub trait Checkpoint {
    /// The scan is done: every account-region's instances are known.
    fn scanned(&mut self, run: &Run);

    /// The account-region at `index` in the run is through `phase`.
    fn target_done(&self, _index: usize, _target: &TargetRun, _phase: Phase) {}
}

impl<F: FnMut(&Run)> Checkpoint for F {
    fn scanned(&mut self, run: &Run) {
        self(run)
    }
}

/// The answer to the production guard.
pub enum Confirmation {
    Yes,
    No(String),
}

impl Workflow<'_> {
    /// Runs the planned phases over `landing_zones`. `checkpoint` is called
    /// after each phase (the caller rewrites the CSV there), and `confirm`
    /// is asked before changes in a prod landing zone.
    pub async fn run(
        &self,
        landing_zones: &[&LandingZone],
        checkpoint: &mut dyn Checkpoint,
        confirm: &mut dyn FnMut(&str) -> Confirmation,
    ) -> Result<Run, crate::Error> {
        let mut run = Run {
            id: self.options.run_id.clone(),
            started_at: self.clock.now(),
            finished_at: None,
            dry_run: self.options.dry_run,
            simulated: self.cloud.is_simulated(),
            interrupted: false,
            landing_zones: landing_zones.iter().map(|lz| lz.name.clone()).collect(),
            targets: Vec::new(),
            landing_zone_failures: Vec::new(),
            phases: Vec::new(),
            events: Vec::new(),
            permission_checks: Vec::new(),
            notifications: Vec::new(),
        };

        let before = self.cloud.api_calls().snapshot();
        let started = Instant::now();
        tracing::info!(phase = Phase::Scanner.name(), "phase started");
        let tally = scan::run(self, &mut run, landing_zones).await;
        self.summarise(&mut run, Phase::Scanner, tally, started.elapsed());
        if let Some(p) = run.phases.last_mut() {
            p.api_calls = calls_since(&before, &self.cloud.api_calls().snapshot());
        }
        checkpoint.scanned(&run);

        let mutating: Vec<Phase> = [Phase::AmiBackup, Phase::ServerStart]
            .into_iter()
            .filter(|p| self.plan(*p) == Plan::Run)
            .collect();
        if self.options.dry_run {
            permissions::check(
                self,
                &mut run,
                mutating.contains(&Phase::AmiBackup),
                mutating.contains(&Phase::ServerStart),
            )
            .await;
            // Validation would judge a fleet the run did not prepare.
            for p in [Phase::AmiBackup, Phase::ServerStart, Phase::Validation] {
                self.skip(&mut run, p, Plan::Skip("dry run".into()));
            }
        } else if !mutating.is_empty()
            && let Confirmation::No(why) = self.guard(landing_zones, &run, &mutating, confirm)
        {
            return Err(crate::Error::Refused(why));
        }

        let mut planned = Vec::new();
        for phase in [Phase::AmiBackup, Phase::ServerStart, Phase::Validation] {
            if run.phases.iter().any(|p| p.phase == phase) {
                continue;
            }
            let plan = if self.shutdown.requested() {
                Plan::Skip("interrupted".into())
            } else {
                self.plan(phase)
            };
            if plan == Plan::Run {
                planned.push(phase);
            } else {
                self.skip(&mut run, phase, plan);
            }
        }
        if !planned.is_empty() {
            self.through(&mut run, &planned, checkpoint).await;
        }

        run.interrupted = self.shutdown.requested();
        run.events = std::mem::take(&mut *self.events.lock().unwrap_or_else(|e| e.into_inner()));
        run.finished_at = Some(self.clock.now());
        Ok(run)
    }

    fn plan(&self, phase: Phase) -> Plan {
        self.options.plans.get(&phase).cloned().unwrap_or(Plan::Run)
    }

    fn skip(&self, run: &mut Run, phase: Phase, plan: Plan) {
        run.phases.push(PhaseSummary {
            phase,
            plan,
            done: 0,
            failed: 0,
            skipped: 0,
            seconds: 0.0,
            slowest: None,
            api_calls: BTreeMap::new(),
        });
    }

    /// Takes every account-region through `phases`, in order, each at its
    /// own pace; then sums each phase up: its counts, its time from the
    /// first account-region into it to the last one out, and the requests
    /// made for it.
    async fn through(&self, run: &mut Run, phases: &[Phase], checkpoint: &dyn Checkpoint) {
        // What starts and validation need to know of the backup, known
        // before any account-region moves on.
        let backed_up = phases.contains(&Phase::AmiBackup)
            || run
                .phases
                .iter()
                .any(|p| p.phase == Phase::AmiBackup && p.plan == Plan::Run);
        let any_backup = backed_up || run.records().any(|r| r.backup.is_some());
        let began = Instant::now();
        let mut targets: Vec<(usize, &mut TargetRun)> =
            run.targets.iter_mut().enumerate().collect();
        let timings = for_each_target(&mut targets, |(index, t)| async move {
            let mut times = Vec::new();
            let name = t.target.to_string();
            for &phase in phases {
                if self.shutdown.requested() {
                    break;
                }
                let from = began.elapsed();
                let at = self.clock.now();
                tracing::info!(phase = phase.name(), target_ = %t.target, "phase started");
                let work = async {
                    match phase {
                        Phase::AmiBackup => backup::backup_target(self, t).await,
                        Phase::ServerStart => start::start_target(self, t, backed_up).await,
                        Phase::Validation => validate::validate_target(self, t, any_backup).await,
                        Phase::Scanner => Tally::default(),
                    }
                };
                let tally = crate::cloud::counted_for(phase, work).await;
                times.push((phase, tally, from, began.elapsed(), name.clone()));
                t.spans.push(PhaseSpan {
                    phase,
                    from: at,
                    to: self.clock.now(),
                });
                checkpoint.target_done(*index, t, phase);
            }
            times
        })
        .await;
        for &phase in phases {
            let mut tally = Tally::default();
            let (mut first, mut last) = (None::<Duration>, Duration::ZERO);
            let mut slowest: Option<Slowest> = None;
            for (_, t, from, to, name) in timings.iter().flatten().filter(|(p, ..)| *p == phase) {
                tally += *t;
                first = Some(first.map_or(*from, |f| f.min(*from)));
                last = last.max(*to);
                let took = (*to - *from).as_secs_f64();
                if slowest.as_ref().is_none_or(|s| took > s.seconds) {
                    slowest = Some(Slowest {
                        target: name.clone(),
                        seconds: took,
                    });
                }
            }
            let Some(first) = first else {
                self.skip(run, phase, Plan::Skip("interrupted".into()));
                continue;
            };
            self.summarise(run, phase, tally, last - first);
            if let Some(p) = run.phases.last_mut() {
                p.api_calls = self.cloud.api_calls().of_phase(phase);
                p.slowest = slowest;
            }
        }
    }

    /// A phase that ran, summed up.
    fn summarise(&self, run: &mut Run, phase: Phase, tally: Tally, took: Duration) {
        tracing::info!(
            phase = phase.name(),
            done = tally.done,
            failed = tally.failed,
            "phase finished"
        );
        run.phases.push(PhaseSummary {
            phase,
            plan: Plan::Run,
            done: tally.done,
            failed: tally.failed,
            skipped: tally.skipped,
            seconds: took.as_secs_f64(),
            slowest: None,
            api_calls: BTreeMap::new(),
        });
    }

    /// Records a line of the execution log.
    pub fn event(&self, phase: Phase, scope: impl fmt::Display, message: impl Into<String>) {
        let event = Event {
            at: self.clock.now(),
            phase,
            scope: scope.to_string(),
            message: message.into(),
        };
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(event);
    }

    /// Asks for confirmation when a change would touch a landing zone
    /// whose environment needs it (prod, and any the config says).
    fn guard(
        &self,
        landing_zones: &[&LandingZone],
        run: &Run,
        mutating: &[Phase],
        confirm: &mut dyn FnMut(&str) -> Confirmation,
    ) -> Confirmation {
        let guarded: std::collections::BTreeSet<&str> = landing_zones
            .iter()
            .filter(|lz| lz.confirm)
            .map(|lz| lz.name.as_str())
            .collect();
        let prod: Vec<&TargetRun> = run
            .targets
            .iter()
            .filter(|t| guarded.contains(t.target.landing_zone.as_str()))
            .collect();
        if prod.is_empty() || self.options.assume_yes {
            return Confirmation::Yes;
        }
        let records = || prod.iter().flat_map(|t| t.records.iter());
        let amis = if mutating.contains(&Phase::AmiBackup) {
            records().count()
        } else {
            0
        };
        let starts = if mutating.contains(&Phase::ServerStart) {
            records()
                .filter(|r| start::wants_start(r.instance.state))
                .count()
        } else {
            0
        };
        let mut names: Vec<String> = prod
            .iter()
            .map(|t| format!("{} ({})", t.target.landing_zone, t.environment))
            .collect();
        names.dedup();
        confirm(&format!(
            "this run changes landing zone(s) that need confirmation, {}: it creates up to {amis} AMIs and starts {starts} stopped instances",
            names.join(", ")
        ))
    }
}
