//! `prepatch demo`: the whole workflow on a simulated fleet, no AWS
//! account needed.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use super::execute::execute;
use super::{BUILT_IN_CONFIG, options};
use super::{Context, Operation, cleanup, rollback};
use crate::cli::{CleanupArgs, DemoArgs, RollbackArgs, Selection};
use crate::cloud;
use crate::cloud::Cloud;
use crate::cloud::limit::Paced;
use crate::config::{Config, LandingZone};
use crate::journal::{self, NewRun};
use crate::model::RunId;
use crate::{Error, Outcome};

/// The built-in demo fleet: two nonprod landing zones and one prod, each in
/// two regions.
pub fn demo_config() -> Config {
    let text = "\
aws:
  regions: [us-east-1, eu-west-1]
  max_concurrency: 16
landing_zones:
  - {name: demo-app-nonprod, account_id: \"111111111111\", environment: nonprod}
  - {name: demo-data-nonprod, account_id: \"222222222222\", environment: nonprod}
  - {name: demo-core-prod, account_id: \"333333333333\", environment: prod}
";
    // A constant that the unit tests parse: it cannot fail at run time.
    Config::parse(text, Path::new(BUILT_IN_CONFIG))
        .unwrap_or_else(|e| unreachable!("demo config: {e}"))
}

pub async fn run(ctx: &Context<'_>, demo: &DemoArgs) -> Result<Outcome, Error> {
    let cli = ctx.cli;
    let config = match &demo.config {
        Some(path) => ctx.config(path)?,
        None => super::with_cli_formats(demo_config(), cli),
    };
    if demo.after_patch && cli.output.summary == crate::cli::SummaryFormat::Json {
        return Err(Error::Usage(
            "--after-patch prints the rollback's and the cleanup's own summaries: use it without --summary json".into(),
        ));
    }
    let faults = cloud::sim::FaultKind::parse_list(&demo.faults)
        .map_err(|e| Error::Usage(format!("--faults: {e}")))?;
    let landing_zones: Vec<LandingZone> = config
        .landing_zones
        .iter()
        .filter(|lz| lz.enabled)
        .cloned()
        .collect();
    if landing_zones.is_empty() {
        return Err(Error::Usage(
            "the demo config has no enabled landing zone".into(),
        ));
    }
    let spec = cloud::sim::FleetSpec {
        landing_zones: landing_zones.clone(),
        instances: demo.instances as usize,
        seed: demo.seed,
        stopped_share: 0.2,
        // With faults off, a clean fleet: every instance can be READY.
        agent_problems: if faults.is_empty() { 0.0 } else { 0.02 },
    };
    let sim = match &demo.fleet {
        Some(path) => cloud::sim::fleet::load(path, &landing_zones).map_err(Error::Usage)?,
        None => cloud::sim::SimCloud::generate(&spec),
    };
    let injected = sim.inject(&faults, &landing_zones, demo.seed);
    let mut phases = demo.phases.clone();
    // Nothing real is touched: the prod guard has nothing to guard.
    phases.yes = true;
    let options = options(&config, &phases, cli)?;
    if !cli.output.quiet {
        let instances: usize = landing_zones
            .iter()
            .flat_map(|lz| {
                lz.regions
                    .iter()
                    .map(|r| sim.instances(&lz.account_id, r).len())
            })
            .sum();
        let from = match &demo.fleet {
            Some(path) => format!("described in {}", path.display()),
            None => format!("seed {}", demo.seed),
        };
        let _ = writeln!(
            crate::console::stderr(),
            "prepatch demo: SIMULATED fleet of {instances} instances in {} landing zones ({from}); no AWS account is used and nothing real is touched.",
            landing_zones.len(),
        );
        for f in &injected {
            let _ = writeln!(crate::console::stderr(), "  injected fault: {f}");
        }
    }
    let cloud = Paced::new(sim).with_max_in_flight(config.aws.max_concurrency);
    let journal = std::sync::Arc::new(journal::Journal::open_or_create(&ctx.journal)?.relaxed()?);
    let mut outcome = execute(
        &cloud,
        &config,
        &landing_zones,
        &options,
        &super::execute::Output {
            dir: &cli.output.output_dir,
            summary: cli.output.summary,
        },
        &journal,
        "{}",
    )
    .await;
    if demo.after_patch
        && let Ok(run) = &outcome
    {
        let after = after_patch(ctx, &cloud, &config, &landing_zones, &journal, &options).await?;
        outcome = Ok(Outcome {
            failures: run.failures || after.failures,
            interrupted: run.interrupted || after.interrupted,
        });
    }
    // The simulated fleet is freed on the side: at 100,000 instances that
    // takes longer than anything left to do.
    std::thread::spawn(move || drop(cloud));
    outcome
}

/// `--after-patch`: in the same simulated world, `rollback` of the run's
/// NOT READY instances, then `cleanup --run` of the READY ones' backups,
/// each the command's own code, output, journal record and reports.
async fn after_patch<C: Cloud>(
    ctx: &Context<'_>,
    cloud: &Paced<C>,
    config: &Config,
    landing_zones: &[LandingZone],
    journal: &Arc<journal::Journal>,
    options: &crate::workflow::Options,
) -> Result<Outcome, Error> {
    let run_id = options.run_id.as_str();
    let run = journal::snapshot::load(journal, run_id)
        .ok()
        .flatten()
        .ok_or_else(|| Error::Usage(format!("run {run_id} is not in the journal")))?;
    let (mut ready, mut not_ready) = (Vec::new(), Vec::new());
    for r in run.records() {
        match &r.verdict {
            Some(v) if v.ready => ready.push(r.instance.id.to_string()),
            Some(_) => not_ready.push(r.instance.id.to_string()),
            None => {}
        }
    }
    let names: Vec<String> = landing_zones.iter().map(|l| l.name.clone()).collect();
    let begin = |kind: &str, params: serde_json::Value| -> Result<(String, Operation), Error> {
        let id = RunId::generate(chrono::Utc::now()).to_string();
        let op = Operation::begin(
            journal,
            &NewRun {
                id: &id,
                kind,
                of_run: Some(run_id),
                landing_zones: &names,
                environment: &super::environments_of(landing_zones),
                params: &params.to_string(),
                simulated: true,
                dry_run: false,
            },
            landing_zones,
            false,
        )?;
        Ok((id, op))
    };
    let out_dir = &ctx.cli.output.output_dir;
    let mut outcome = Outcome {
        failures: false,
        interrupted: false,
    };
    let _ = writeln!(crate::console::stdout());
    if not_ready.is_empty() {
        let _ = writeln!(
            crate::console::stdout(),
            "after the patch: every instance is READY, nothing to roll back"
        );
    } else {
        let _ = writeln!(
            crate::console::stdout(),
            "after the patch: rolling back the {} NOT READY instances to their backups (prepatch rollback --run {run_id} --instances ...)",
            not_ready.len()
        );
        let args = RollbackArgs {
            run: run_id.to_owned(),
            instances: not_ready.clone(),
            landing_zones: Vec::new(),
            all: false,
            start: false,
            delete_replaced_volume: false,
            config: None,
            profile: None,
            dry_run: false,
            yes: true,
        };
        let (id, op) = begin(
            "rollback",
            serde_json::json!({"run": run_id, "instances": not_ready}),
        )?;
        let witnesses = journal.backup_witnesses(run_id)?;
        let dir = out_dir.join(run_id).join(format!("rollback-{id}"));
        let result = rollback::rollback_with(
            cloud,
            &op,
            config,
            landing_zones,
            &witnesses,
            run_id,
            &args,
            &dir,
        )
        .await;
        let what = format!("rollback to run {run_id}");
        let o = op.conclude(config, &what, result, &dir).await?;
        outcome.failures |= o.failures;
        outcome.interrupted |= o.interrupted;
    }
    if ready.is_empty() {
        let _ = writeln!(
            crate::console::stdout(),
            "after the patch: no READY instance, no backup to release"
        );
        return Ok(outcome);
    }
    let _ = writeln!(
        crate::console::stdout(),
        "after the patch: releasing the backups of the {} READY instances (prepatch cleanup --run {run_id} --instances ... --yes)",
        ready.len()
    );
    let args = CleanupArgs {
        select: Selection {
            config: BUILT_IN_CONFIG.into(),
            landing_zones: names.clone(),
            environment: None,
            profile: None,
            region: Vec::new(),
            inventory: Vec::new(),
        },
        older_than: None,
        run: Some(run_id.to_owned()),
        instances: ready.clone(),
        dry_run: false,
        yes: true,
    };
    let (id, op) = begin(
        "cleanup",
        serde_json::json!({"run": run_id, "instances": ready.len()}),
    )?;
    let dir = out_dir.join(format!("cleanup-{id}"));
    let result = cleanup::cleanup_with(cloud, &op, landing_zones, &args, &dir).await;
    let o = op.conclude(config, "cleanup", result, &dir).await?;
    outcome.failures |= o.failures;
    outcome.interrupted |= o.interrupted;
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    #[test]
    fn demo_config_parses() {
        let c = super::demo_config();
        assert_eq!(c.landing_zones.len(), 3);
    }
}
