//! `prepatch runs` lists the journal's runs; `runs show <id>` prints a
//! run's timeline, every change as an intent and its outcome (the audit
//! trail).

use std::io::Write;

use super::{Context, stdout_error};
use crate::cli::{RunsArgs, RunsCommand};
use crate::journal::{Journal, RunRow};
use crate::{Error, Outcome};

/// `prepatch runs` and `prepatch runs show <id>`.
pub fn run(ctx: &Context, args: &RunsArgs) -> Result<Outcome, Error> {
    let journal = Journal::open_existing(&ctx.journal)?;
    let mut out = crate::console::stdout();
    match &args.command {
        None => write_runs(&journal.runs()?, &mut out).map_err(stdout_error)?,
        Some(RunsCommand::Show { run_id }) => {
            let row = journal.run(run_id)?;
            let steps = journal.steps(run_id)?;
            write_show(&row, &steps, &mut out).map_err(stdout_error)?;
        }
    }
    Ok(Outcome {
        failures: false,
        interrupted: false,
    })
}

/// The runs as a table, newest first.
pub fn write_runs(rows: &[RunRow], out: &mut dyn Write) -> std::io::Result<()> {
    if rows.is_empty() {
        return writeln!(out, "no runs in the journal yet");
    }
    writeln!(
        out,
        "{:<32} {:<8} {:<20} {:<30} {:<12} {:>9} {:>5} {:>7} {:>8}  STATUS",
        "RUN ID",
        "KIND",
        "STARTED",
        "LANDING ZONES",
        "ENVIRONMENT",
        "INSTANCES",
        "AMIS",
        "STARTED",
        "FAILURES"
    )?;
    for r in rows {
        // A simulated run is the demo; its rollback and cleanup
        // (`demo --after-patch`) keep their own names.
        let kind = match (r.simulated, r.kind.as_str()) {
            (true, "run") => "demo".to_owned(),
            _ => r.kind.clone(),
        };
        let mut status = r.status.as_str().to_owned();
        if r.dry_run {
            status.push_str(" (dry run)");
        }
        if let Some(of) = &r.of_run {
            status.push_str(&format!(" (of {of})"));
        }
        writeln!(
            out,
            "{:<32} {:<8} {:<20} {:<30} {:<12} {:>9} {:>5} {:>7} {:>8}  {}",
            r.id,
            kind,
            r.started_at.get(..19).unwrap_or(&r.started_at),
            r.landing_zones,
            r.environment,
            r.instances,
            r.amis,
            r.started,
            r.failures,
            status
        )?;
    }
    Ok(())
}

/// A run's header and its timeline.
pub fn write_show(
    row: &RunRow,
    steps: &[crate::journal::Step],
    out: &mut dyn Write,
) -> std::io::Result<()> {
    writeln!(out, "run {} ({})", row.id, row.kind)?;
    if let Some(of) = &row.of_run {
        writeln!(out, "  of run:        {of}")?;
    }
    writeln!(out, "  status:        {}", row.status.as_str())?;
    writeln!(out, "  started:       {}", row.started_at)?;
    writeln!(
        out,
        "  finished:      {}",
        row.finished_at.as_deref().unwrap_or("-")
    )?;
    writeln!(out, "  attempts:      {}", row.attempts)?;
    writeln!(out, "  landing zones: {}", row.landing_zones)?;
    writeln!(out, "  environment:   {}", row.environment)?;
    writeln!(
        out,
        "  counts:        {} instances, {} AMIs, {} started, {} failures",
        row.instances, row.amis, row.started, row.failures
    )?;
    if let Some(s) = &row.summary {
        writeln!(out, "  summary:       {s}")?;
    }
    writeln!(out, "  parameters:    {}", row.params)?;
    writeln!(out, "\ntimeline ({} steps):", steps.len())?;
    for s in steps {
        let where_ = if s.account.is_empty() {
            String::new()
        } else {
            format!("{} {}/{}", s.landing_zone, s.account, s.region)
        };
        let resources = if s.resources.len() > 4 {
            format!(
                "{} (+{} more)",
                s.resources[..4].join(" "),
                s.resources.len() - 4
            )
        } else {
            s.resources.join(" ")
        };
        let outcome = match s.status.as_str() {
            "intent" => "INTENT, NO OUTCOME (in flight when the process stopped)".to_owned(),
            "ok" => match &s.result {
                Some(r) => format!("ok {r}"),
                None => "ok".to_owned(),
            },
            other => format!("{other}: {}", s.error.as_deref().unwrap_or("")),
        };
        writeln!(
            out,
            "  {}  {:<16} {:<40} {}  -> {}",
            s.at, s.action, where_, resources, outcome
        )?;
    }
    Ok(())
}
