//! The table printed at the end of a run: instances per landing zone by
//! state, SSM status and verdict; each phase's counts, time and API calls;
//! failures with their reasons, first.

use std::collections::BTreeMap;
use std::io::{self, Write};

use crate::cloud::{Api, CallCount};
use crate::model::{InstanceState, SsmPing};
use crate::model::{Phase, Plan, Run};

/// How many failed instances are listed before "... and N more".
const SHOWN_FAILURES: usize = 25;

#[derive(Default)]
struct Row {
    instances: usize,
    running: usize,
    stopped: usize,
    other: usize,
    online: usize,
    not_online: usize,
    /// SSM could not be asked: neither ok nor not ok.
    ssm_unknown: usize,
    amis: usize,
    started: usize,
    ready: usize,
    not_ready: usize,
}

pub fn write(
    run: &Run,
    total_calls: &BTreeMap<Api, CallCount>,
    out: &mut dyn Write,
) -> io::Result<()> {
    let sim = if run.simulated {
        " [SIMULATED: no AWS account was touched]"
    } else {
        ""
    };
    let dry = if run.dry_run {
        " [DRY RUN: no changes made]"
    } else {
        ""
    };
    writeln!(out)?;
    writeln!(
        out,
        "prepatch run {}{sim}{dry}: {} landing zone(s), {} account-region(s), {} instance(s)",
        run.id,
        run.landing_zones.len(),
        run.targets.len(),
        run.instance_count()
    )?;

    landing_zone_table(run, out)?;
    phase_table(run, out)?;
    failures(run, out)?;
    let total: u64 = total_calls.values().map(|c| c.calls).sum();
    let throttled: u64 = total_calls.values().map(|c| c.throttled).sum();
    writeln!(out)?;
    writeln!(
        out,
        "AWS API calls: {total} ({throttled} throttled): {}",
        calls_line(total_calls)
    )?;
    Ok(())
}

/// Each landing zone's counts: its instances, their states, SSM, AMIs,
/// starts, verdicts.
fn rows(run: &Run) -> BTreeMap<&str, Row> {
    let mut rows: BTreeMap<&str, Row> = run
        .landing_zones
        .iter()
        .map(|lz| (lz.as_str(), Row::default()))
        .collect();
    for r in run.records() {
        let row = rows.entry(r.landing_zone.as_str()).or_default();
        row.instances += 1;
        match r.current_state() {
            InstanceState::Running => row.running += 1,
            InstanceState::Stopped => row.stopped += 1,
            _ => row.other += 1,
        }
        match r.ssm.ping {
            SsmPing::Online => row.online += 1,
            SsmPing::Unknown => row.ssm_unknown += 1,
            _ => row.not_online += 1,
        }
        if r.backup.as_ref().is_some_and(|b| b.exists()) {
            row.amis += 1;
        }
        if r.start.as_ref().is_some_and(|s| s.started_by_run) {
            row.started += 1;
        }
        match &r.verdict {
            Some(v) if v.ready => row.ready += 1,
            Some(_) => row.not_ready += 1,
            None => {}
        }
    }
    rows
}

/// A row per landing zone: its instances, their states, AMIs, verdicts.
fn landing_zone_table(run: &Run, out: &mut dyn Write) -> io::Result<()> {
    let rows = rows(run);
    writeln!(out)?;
    crate::oneline!(
        out,
        "{:<24} {:>9} {:>8} {:>8} {:>6} {:>7} {:>10} {:>11} {:>6} {:>8} {:>6} {:>10}",
        "landing zone",
        "instances",
        "running",
        "stopped",
        "other",
        "ssm ok",
        "ssm not ok",
        "ssm unknown",
        "AMIs",
        "started",
        "READY",
        "NOT READY"
    )?;
    for (lz, r) in &rows {
        crate::oneline!(
            out,
            "{:<24} {:>9} {:>8} {:>8} {:>6} {:>7} {:>10} {:>11} {:>6} {:>8} {:>6} {:>10}",
            lz,
            r.instances,
            r.running,
            r.stopped,
            r.other,
            r.online,
            r.not_online,
            r.ssm_unknown,
            r.amis,
            r.started,
            r.ready,
            r.not_ready
        )?;
    }
    // Why SSM is unknown, once per account-region, not once per instance.
    for t in &run.targets {
        if let Some(e) = &t.ssm_error {
            crate::oneline!(out, "ssm unknown in {}: {e}", t.target)?;
        }
    }
    Ok(())
}

/// A row per phase: done, failed, skipped, time and calls.
fn phase_table(run: &Run, out: &mut dyn Write) -> io::Result<()> {
    writeln!(out)?;
    writeln!(
        out,
        "{:<13} {:>6} {:>6} {:>7} {:>9}  {:<40}  api calls",
        "phase", "done", "failed", "skipped", "time", "slowest account-region"
    )?;
    for phase in Phase::ALL {
        let Some(p) = run.phases.iter().find(|p| p.phase == phase) else {
            writeln!(out, "{:<13} not run", phase.name())?;
            continue;
        };
        match &p.plan {
            Plan::Skip(why) => writeln!(out, "{:<13} skipped: {why}", phase.name())?,
            Plan::Run => writeln!(
                out,
                "{:<13} {:>6} {:>6} {:>7} {:>8.1}s  {:<40}  {}",
                phase.name(),
                p.done,
                p.failed,
                p.skipped,
                p.seconds,
                p.slowest
                    .as_ref()
                    .map(|s| format!("{} {:.1}s", s.target, s.seconds))
                    .unwrap_or_default(),
                calls_line(&p.api_calls)
            )?,
        }
    }
    Ok(())
}

/// What failed, the first few; and how to go on after an interruption.
/// What failed, in order: landing zones, account-regions, then NOT READY
/// instances with their reasons. The terminal lists the first few, and so
/// do the notifications.
pub fn failure_lines(run: &Run) -> Vec<String> {
    run.landing_zone_failures
        .iter()
        .map(|f| format!("{} ({}): {}", f.landing_zone, f.account, f.error))
        .chain(
            run.targets
                .iter()
                .filter_map(|t| Some(format!("{}: {}", t.target, t.error.as_ref()?))),
        )
        .chain(run.records().filter_map(|r| {
            let v = r.verdict.as_ref().filter(|v| !v.ready)?;
            let name = match r.instance.name().filter(|n| !n.is_empty()) {
                Some(n) => format!(" ({n})"),
                None => String::new(),
            };
            Some(format!(
                "{} {}{name}: {}",
                r.landing_zone,
                r.instance.id,
                v.reasons.join("; ")
            ))
        }))
        .collect()
}

fn failures(run: &Run, out: &mut dyn Write) -> io::Result<()> {
    let failures = failure_lines(run);
    if !failures.is_empty() {
        writeln!(out)?;
        crate::oneline!(out, "failures ({}):", failures.len())?;
        for f in failures.iter().take(SHOWN_FAILURES) {
            crate::oneline!(out, "  {f}")?;
        }
        if failures.len() > SHOWN_FAILURES {
            crate::oneline!(
                out,
                "  ... and {} more (see inventory.csv)",
                failures.len() - SHOWN_FAILURES
            )?;
        }
    }
    if run.interrupted {
        writeln!(
            out,
            "\ninterrupted: continue with --resume {} (or rerun with --run-id {}): nothing is made twice",
            run.id, run.id
        )?;
    }
    Ok(())
}

fn calls_line(calls: &BTreeMap<Api, CallCount>) -> String {
    if calls.is_empty() {
        return "none".into();
    }
    calls
        .iter()
        .map(|(api, c)| format!("{api} {}", c.calls))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The end-of-run summary as one JSON object, for a pipeline step
/// (`--summary json`; `schema/summary.schema.json`): what the run was, how
/// it ended and its exit code, counts per landing zone, where the reports
/// and the journal are.
pub fn json(
    run: &Run,
    exit_code: u8,
    reports: &[std::path::PathBuf],
    reports_dir: &std::path::Path,
    journal: &std::path::Path,
) -> serde_json::Value {
    let rows = rows(run);
    let failed: std::collections::BTreeMap<&str, String> = run
        .landing_zone_failures
        .iter()
        .map(|f| (f.landing_zone.as_str(), f.error.to_string()))
        .collect();
    let total = |f: fn(&Row) -> usize| rows.values().map(f).sum::<usize>();
    let outcome = run.outcome();
    serde_json::json!({
        "schema_version": 1,
        "run_id": run.id.as_str(),
        "outcome": outcome,
        "exit_code": exit_code,
        "simulated": run.simulated,
        "dry_run": run.dry_run,
        "totals": {
            "instances": total(|r| r.instances),
            "ready": total(|r| r.ready),
            "not_ready": total(|r| r.not_ready),
            "amis": total(|r| r.amis),
            "started": total(|r| r.started),
        },
        "landing_zones": rows.iter().map(|(name, r)| serde_json::json!({
            "name": name,
            "failed": failed.get(name),
            "instances": r.instances,
            "ready": r.ready,
            "not_ready": r.not_ready,
            "amis": r.amis,
            "started": r.started,
        })).collect::<Vec<_>>(),
        "reports": {
            "dir": reports_dir.display().to_string(),
            "files": reports.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        },
        "journal": journal.display().to_string(),
    })
}
