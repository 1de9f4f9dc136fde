//! `prepatch demo`: the whole workflow on a simulated fleet, no AWS
//! account needed.

use std::path::Path;

use super::Context;
use super::execute::execute;
use super::{BUILT_IN_CONFIG, options};
use crate::cli::DemoArgs;
use crate::cloud;
use crate::cloud::limit::Paced;
use crate::config::{Config, LandingZone};
use crate::journal;
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
        eprintln!(
            "prepatch demo: SIMULATED fleet of {instances} instances in {} landing zones ({from}); no AWS account is used and nothing real is touched.",
            landing_zones.len(),
        );
        for f in &injected {
            eprintln!("  injected fault: {f}");
        }
    }
    let cloud = Paced::new(sim).with_max_in_flight(config.aws.max_concurrency);
    let journal = std::sync::Arc::new(journal::Journal::open_or_create(&ctx.journal)?.relaxed()?);
    let outcome = execute(
        &cloud,
        &config,
        &landing_zones,
        &options,
        &cli.output.output_dir,
        &journal,
        "{}",
    )
    .await;
    // The simulated fleet is freed on the side: at 100,000 instances that
    // takes longer than anything left to do.
    std::thread::spawn(move || drop(cloud));
    outcome
}

#[cfg(test)]
mod tests {
    #[test]
    fn demo_config_parses() {
        let c = super::demo_config();
        assert_eq!(c.landing_zones.len(), 3);
    }
}
