//! The run on AWS: flags and config made into the run's options, or an
//! interrupted run's own parameters read back from the journal
//! (`--resume`).

use std::io::Write;
use std::sync::Arc;

use super::execute::execute;
use super::{Context, connect_aws, options, phase_name, select_landing_zones};
use crate::cli::{PhaseArg, PhaseArgs};
use crate::journal::{self, Journal, RunParams};
use crate::model::Environment;
use crate::{Error, Outcome};

/// `prepatch` (no subcommand): the run on AWS.
pub async fn run(ctx: &Context<'_>) -> Result<Outcome, Error> {
    let cli = ctx.cli;
    let (mut params, phases, resumed) = match &cli.run.resume {
        Some(which) => {
            let r = resume(ctx, which)?;
            (r.params, r.phases, Some((r.journal, r.environment)))
        }
        None => (params_of(ctx), cli.run.phases.clone(), None),
    };
    let environment = match params.environment.as_deref() {
        Some(e) => Some(e.parse::<Environment>().map_err(Error::Usage)?),
        None => None,
    };
    let mut config = ctx.config(&params.config)?;
    config.add_inventory(&params.inventory)?;
    let cloud = connect_aws(params.profile.clone(), &config).await;
    // Landing zones from AWS Organizations: read now for a new run (and
    // recorded with it), the recorded ones for a resume.
    match &resumed {
        Some(_) => config.add_recorded(&params.discovered)?,
        None => params.discovered = super::discover(&mut config, cloud.inner()).await?.added,
    }
    let mut landing_zones =
        select_landing_zones(&config, &params.landing_zones, environment, &params.regions)?;
    match &resumed {
        // A resume: what needed confirmation by the record needs it,
        // whatever the config says now.
        Some((_, env)) => params.guard_recorded(&mut landing_zones, env),
        None => {
            params.environments = landing_zones
                .iter()
                .map(|lz| (lz.name.clone(), lz.environment.to_string()))
                .collect();
            params.confirm = Some(
                landing_zones
                    .iter()
                    .filter(|lz| lz.confirm)
                    .map(|lz| lz.name.clone())
                    .collect(),
            );
            params.retention = landing_zones
                .iter()
                .map(|lz| (lz.name.clone(), lz.retention_days))
                .collect();
        }
    }
    let options = options(&config, &phases, cli)?;
    let journal = match resumed {
        Some((j, _)) => j,
        None => Arc::new(Journal::open_or_create(&ctx.journal)?),
    };
    let params = serde_json::to_string(&params).unwrap_or_default();
    execute(
        &cloud,
        &config,
        &landing_zones,
        &options,
        &super::execute::Output {
            dir: &cli.output.output_dir,
            summary: cli.output.summary,
        },
        &journal,
        &params,
    )
    .await
}

/// The run's parameters from the flags, as the journal keeps them.
fn params_of(ctx: &Context<'_>) -> RunParams {
    let args = &ctx.cli.run;
    RunParams {
        config: args.select.config.clone(),
        landing_zones: args.select.landing_zones.clone(),
        environment: args.select.environment.as_ref().map(|e| e.to_string()),
        regions: args.select.region.clone(),
        profile: args.select.profile.clone(),
        scanner_only: args.phases.scanner_only,
        phase: args.phases.phase.map(|p| phase_name(p).to_owned()),
        skip_backup: args.phases.skip_backup,
        skip_start: args.phases.skip_start,
        skip_validation: args.phases.skip_validation,
        no_wait_backup: args.phases.no_wait_backup,
        output_dir: ctx.cli.output.output_dir.clone(),
        // Absolute: a resume, restore or rollback may run from elsewhere.
        inventory: args
            .select
            .inventory
            .iter()
            .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone()))
            .collect(),
        environments: Default::default(),
        retention: Default::default(),
        confirm: None,
        discovered: Vec::new(),
    }
}

/// An interrupted run, read back to go on with.
struct Resumed {
    journal: Arc<Journal>,
    params: RunParams,
    phases: PhaseArgs,
    /// The run's record of environments: it guards the resume.
    environment: String,
}

/// `--resume <id|latest>`: the run's own parameters from the journal; a
/// run that is complete, a dry run or a demo cannot be resumed.
fn resume(ctx: &Context<'_>, which: &str) -> Result<Resumed, Error> {
    let path = &ctx.journal;
    let j = Journal::open_existing(path)?;
    let row = if which == "latest" {
        j.latest_interrupted()?.ok_or_else(|| {
            Error::Usage(format!(
                "--resume latest: no interrupted run in {}",
                path.display()
            ))
        })?
    } else {
        j.run(which)?
    };
    super::checked_from_journal(&row.id, &row.landing_zones, path)?;
    if row.kind != "run" || row.dry_run || row.simulated {
        return Err(Error::Usage(format!(
            "--resume: {} is a {}{}, not a run that can be resumed",
            row.id,
            if row.dry_run { "dry " } else { "" },
            if row.simulated {
                "demo run"
            } else {
                row.kind.as_str()
            }
        )));
    }
    if row.status == journal::Status::Complete {
        return Err(Error::Usage(format!(
            "--resume: run {} is complete: nothing to resume",
            row.id
        )));
    }
    let params: RunParams = serde_json::from_str(&row.params).map_err(|e| {
        Error::Usage(format!(
            "--resume: the parameters of run {} in {} cannot be read: {e}",
            row.id,
            path.display()
        ))
    })?;
    let phases = PhaseArgs {
        scanner_only: params.scanner_only,
        phase: params.phase.as_deref().and_then(|p| match p {
            "ami-backup" => Some(PhaseArg::AmiBackup),
            "server-start" => Some(PhaseArg::ServerStart),
            "validation" => Some(PhaseArg::Validation),
            _ => None,
        }),
        skip_backup: params.skip_backup,
        skip_start: params.skip_start,
        skip_validation: params.skip_validation,
        no_wait_backup: params.no_wait_backup,
        dry_run: false,
        yes: ctx.cli.run.phases.yes,
        run_id: Some(row.id.clone()),
    };
    let _ = writeln!(
        crate::console::stderr(),
        "resuming run {} (landing zones {}; attempt {})",
        row.id,
        row.landing_zones,
        row.attempts + 1
    );
    Ok(Resumed {
        journal: Arc::new(j),
        params,
        phases,
        environment: row.environment,
    })
}
