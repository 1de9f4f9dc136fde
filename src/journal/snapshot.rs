//! A run as the journal keeps it, so that `prepatch report --run` can write
//! its reports again, even after a crash.
//!
//! The run's header (phases, events, failures: small) is saved whole after
//! the scan and at the end, and each account-region's part that a phase
//! changed is saved apart, as soon as that account-region is through the
//! phase: the scan writes the instances once; the backup phase then only
//! their backups, the start phase their starts, validation their SSM
//! status and verdicts. Each part is made one account-region at a time, so
//! a 100,000-instance run is never held as one string, and no phase writes
//! again what an earlier one wrote.

use serde::{Deserialize, Serialize};

use super::{Counts, Journal, JournalError, Part};
use crate::model::run::PhaseSpan;
use crate::model::{Backup, SsmInfo, Start, Verdict};
use crate::model::{Phase, Run, TargetRun};

/// What validation changes in a record.
#[derive(Serialize)]
struct CheckRef<'a> {
    ssm: &'a SsmInfo,
    verdict: Option<&'a Verdict>,
}

#[derive(Deserialize)]
struct Check {
    ssm: SsmInfo,
    verdict: Option<Verdict>,
}

/// The checks part: each record's SSM status and verdict, and the
/// account-region's time in each phase (known in full once validation
/// is done). Parts saved before spans were kept are a bare list.
#[derive(Serialize)]
struct ChecksRef<'a> {
    checks: Vec<CheckRef<'a>>,
    spans: &'a [PhaseSpan],
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Checks {
    WithSpans {
        checks: Vec<Check>,
        spans: Vec<PhaseSpan>,
    },
    Bare(Vec<Check>),
}

/// The parts of the account-regions a phase changes. Validation reads the
/// state of what was started again, and waits for the AMIs a backup did not
/// wait for, so it changes those too.
fn parts(phase: Phase, backup_waited: bool) -> &'static [Part] {
    match phase {
        Phase::Scanner => &[Part::Scan],
        Phase::AmiBackup => &[Part::Backups],
        Phase::ServerStart => &[Part::Starts],
        Phase::Validation if backup_waited => &[Part::Checks, Part::Starts],
        Phase::Validation => &[Part::Checks, Part::Starts, Part::Backups],
    }
}

fn part_json(t: &TargetRun, part: Part) -> Result<String, serde_json::Error> {
    match part {
        Part::Scan => serde_json::to_string(t),
        Part::Backups => {
            serde_json::to_string(&t.records.iter().map(|r| &r.backup).collect::<Vec<_>>())
        }
        Part::Starts => {
            serde_json::to_string(&t.records.iter().map(|r| &r.start).collect::<Vec<_>>())
        }
        Part::Checks => serde_json::to_string(&ChecksRef {
            checks: t
                .records
                .iter()
                .map(|r| CheckRef {
                    ssm: &r.ssm,
                    verdict: r.verdict.as_ref(),
                })
                .collect(),
            spans: &t.spans,
        }),
    }
}

/// The run without its account-regions.
fn header(run: &Run) -> Run {
    Run {
        id: run.id.clone(),
        started_at: run.started_at,
        finished_at: run.finished_at,
        dry_run: run.dry_run,
        simulated: run.simulated,
        interrupted: run.interrupted,
        landing_zones: run.landing_zones.clone(),
        targets: Vec::new(),
        landing_zone_failures: run.landing_zone_failures.clone(),
        phases: run.phases.clone(),
        events: run.events.clone(),
        permission_checks: run.permission_checks.clone(),
        notifications: run.notifications.clone(),
    }
}

/// Saves what `phase` changed (none: the header only, as at the end of a
/// run) and the run's counts.
pub fn save(
    j: &Journal,
    run: &Run,
    phase: Option<Phase>,
    backup_waited: bool,
) -> Result<(), String> {
    for &part in phase.map_or(&[][..], |p| parts(p, backup_waited)) {
        // Made before the journal is taken: the next phase, running
        // meanwhile, journals its calls.
        let rows = run
            .targets
            .iter()
            .enumerate()
            .map(|(i, t)| Ok((i, part_json(t, part)?)))
            .collect::<Result<Vec<_>, serde_json::Error>>()
            .map_err(|e| e.to_string())?;
        j.save_parts(run.id.as_str(), part, rows.into_iter())
            .map_err(|e| e.to_string())?;
    }
    let header = serde_json::to_string(&header(run)).map_err(|e| e.to_string())?;
    j.save_snapshot(run.id.as_str(), &header, counts(run))
        .map_err(|e| e.to_string())
}

/// Saves what `phase` changed in one account-region, the run's `index`th.
pub fn save_target(
    j: &Journal,
    run_id: &str,
    index: usize,
    t: &TargetRun,
    phase: Phase,
    backup_waited: bool,
) -> Result<(), String> {
    for &part in parts(phase, backup_waited) {
        let row = part_json(t, part).map_err(|e| e.to_string())?;
        j.save_parts(run_id, part, std::iter::once((index, row)))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Counts for the journal's `runs` list.
fn counts(run: &Run) -> Counts {
    let failed_records = run
        .records()
        .filter(|r| {
            r.verdict.as_ref().is_some_and(|v| !v.ready)
                || r.backup.as_ref().is_some_and(|b| b.error.is_some())
                || r.start.as_ref().is_some_and(|s| s.error.is_some())
        })
        .count();
    Counts {
        instances: run.instance_count(),
        amis: run
            .records()
            .filter(|r| r.backup.as_ref().is_some_and(|b| b.ami.is_some()))
            .count(),
        started: run
            .records()
            .filter(|r| r.start.as_ref().is_some_and(|s| s.started_by_run))
            .count(),
        failures: failed_records
            + run.landing_zone_failures.len()
            + run.targets.iter().filter(|t| t.error.is_some()).count(),
    }
}

/// Why a saved run cannot be read back.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("{0}")]
    Unreadable(String),
}

/// The run as last saved: `None` if nothing was saved yet (it stopped
/// before its scan finished). Reads journals of schema 1 (the whole run in
/// one snapshot) too.
pub fn load(j: &Journal, id: &str) -> Result<Option<Run>, LoadError> {
    let (snapshot, _) = j.snapshot(id)?;
    let Some(snapshot) = snapshot else {
        return Ok(None);
    };
    let mut run: Run =
        serde_json::from_str(&snapshot).map_err(|e| LoadError::Unreadable(e.to_string()))?;
    if !run.targets.is_empty() {
        return Ok(Some(run));
    }
    let targets = &mut run.targets;
    j.for_each_target_part(id, |p| {
        let mut t: TargetRun = serde_json::from_str(&p.scan).map_err(|e| e.to_string())?;
        let n = t.records.len();
        let mismatch = |what: &str, got: usize| {
            format!("{} has {got} saved {what} for {n} instances", t.target)
        };
        if let Some(json) = p.backups {
            let backups: Vec<Option<Backup>> =
                serde_json::from_str(&json).map_err(|e| e.to_string())?;
            if backups.len() != n {
                return Err(mismatch("backups", backups.len()));
            }
            for (r, b) in t.records.iter_mut().zip(backups) {
                r.backup = b;
            }
        }
        if let Some(json) = p.starts {
            let starts: Vec<Option<Start>> =
                serde_json::from_str(&json).map_err(|e| e.to_string())?;
            if starts.len() != n {
                return Err(mismatch("starts", starts.len()));
            }
            for (r, s) in t.records.iter_mut().zip(starts) {
                r.start = s;
            }
        }
        if let Some(json) = p.checks {
            let checks = match serde_json::from_str(&json).map_err(|e| e.to_string())? {
                Checks::WithSpans { checks, spans } => {
                    t.spans = spans;
                    checks
                }
                Checks::Bare(checks) => checks,
            };
            if checks.len() != n {
                return Err(mismatch("checks", checks.len()));
            }
            for (r, c) in t.records.iter_mut().zip(checks) {
                r.ssm = c.ssm;
                r.verdict = c.verdict;
            }
        }
        targets.push(t);
        Ok(())
    })?
    .map_err(LoadError::Unreadable)?;
    Ok(Some(run))
}
