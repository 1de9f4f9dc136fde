//! `prepatch report --run <id>`: a run's reports written again from the
//! journal's snapshot of it.

use std::io::Write;

use super::{Context, stdout_error};
use crate::cli::ReportArgs;
use crate::journal::Journal;
use crate::{Error, Outcome, report};

/// `prepatch report --run <id>`: the reports, from the journal's snapshot.
pub fn run(ctx: &Context, args: &ReportArgs) -> Result<Outcome, Error> {
    let cli = ctx.cli;
    let path = &ctx.journal;
    let journal = Journal::open_existing(path)?;
    let run = crate::journal::snapshot::load(&journal, &args.run)
        .map_err(|e| match e {
            crate::journal::snapshot::LoadError::Journal(e) => Error::from(e),
            crate::journal::snapshot::LoadError::Unreadable(e) => Error::Usage(format!(
                "the state of run {} in {} cannot be read: {e}",
                args.run,
                path.display()
            )),
        })?
        .ok_or_else(|| {
            Error::Usage(format!(
                "run {} in {} has no saved state yet (it stopped before its scan finished)",
                args.run,
                path.display()
            ))
        })?;
    let (_, meta) = journal.snapshot(&args.run)?;
    let unreadable = |what: &str, e: serde_json::Error| {
        Error::Usage(format!(
            "the {what} of run {} in {} cannot be read: {e}",
            args.run,
            path.display()
        ))
    };
    let meta: report::RunMeta = match meta {
        Some(m) => serde_json::from_str(&m).map_err(|e| unreadable("report metadata", e))?,
        None => report::RunMeta {
            tool_version: env!("CARGO_PKG_VERSION").to_owned(),
            ..Default::default()
        },
    };
    let formats = if cli.output.format.is_empty() {
        report::Format::ALL.to_vec()
    } else {
        cli.output.format.clone()
    };
    let landing_zones: Vec<&str> = run
        .targets
        .iter()
        .map(|t| t.target.landing_zone.as_str())
        .collect();
    let id = super::checked_from_journal(run.id.as_str(), &landing_zones.join(","), path)?;
    let dir = cli.output.output_dir.join(id.as_str());
    crate::files::create_dir(&dir).map_err(|source| Error::Write {
        path: dir.display().to_string(),
        source,
    })?;
    let model = report::Report::new(&run, &meta);
    let written =
        report::write_all(&model, &dir, &formats).map_err(|(path, source)| Error::Write {
            path: path.display().to_string(),
            source,
        })?;
    let mut out = crate::console::stdout();
    for p in written {
        writeln!(out, "wrote {}", p.display()).map_err(stdout_error)?;
    }
    Ok(Outcome {
        failures: false,
        interrupted: false,
    })
}
