//! `prepatch landing-zones`: the landing zones the config resolves to,
//! with the landing-zone selection flags a run takes (`-l`, `-e`,
//! `--region`, `--inventory`): each one's name, account, environment,
//! whether its changes need confirmation, how long its backups live, its
//! regions and role, and where it is defined. Nothing in AWS is called
//! but, when the config takes landing zones from AWS Organizations, the
//! organization's listings (no account is entered, no EC2 called): a team
//! checks what a config says before a run.

use std::io::Write;

use super::{Context, select_landing_zones, stdout_error};
use crate::cli::LandingZonesArgs;
use crate::config::LandingZone;
use crate::{Error, Outcome};

pub async fn run(ctx: &Context<'_>, args: &LandingZonesArgs) -> Result<Outcome, Error> {
    let s = &args.select;
    let mut config = ctx.config(&s.config)?;
    config.add_inventory(&s.inventory)?;
    if config.organizations.is_some() {
        let cloud = super::connect_aws(s.profile.clone(), &config).await;
        let found = super::discover(&mut config, cloud.inner()).await?;
        let mut err = crate::console::stderr();
        for why in &found.skipped {
            let _ = crate::oneline!(&mut err, "organizations: passed over {why}");
        }
    }
    let selected: Vec<LandingZone> = if s.landing_zones.is_empty() && s.environment.is_none() {
        config.landing_zones.clone()
    } else {
        select_landing_zones(&config, &s.landing_zones, s.environment.clone(), &s.region)?
    };
    let mut out = crate::console::stdout();
    if args.json {
        let doc: Vec<serde_json::Value> = selected
            .iter()
            .map(|lz| {
                serde_json::json!({
                    "name": lz.name,
                    "account_id": lz.account_id.as_str(),
                    "environment": lz.environment.as_str(),
                    "confirm": lz.confirm,
                    "retention_days": lz.retention_days,
                    "regions": lz.regions.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
                    "role_arn": lz.role_arn,
                    "enabled": lz.enabled,
                    "from": lz.origin,
                })
            })
            .collect();
        serde_json::to_writer_pretty(&mut out, &doc).map_err(std::io::Error::other)
    } else {
        table(&selected, &mut out)
    }
    .and_then(|()| writeln!(out))
    .map_err(stdout_error)?;
    Ok(Outcome::default())
}

fn table(lzs: &[LandingZone], out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<24} {:<12} {:<12} {:<8} {:>9}  {:<8} {:<28} from",
        "landing zone", "account", "environment", "confirm", "retention", "enabled", "regions"
    )?;
    for lz in lzs {
        let regions: Vec<&str> = lz.regions.iter().map(|r| r.as_str()).collect();
        crate::oneline!(
            out,
            "{:<24} {:<12} {:<12} {:<8} {:>8}d  {:<8} {:<28} {}",
            lz.name,
            lz.account_id.as_str(),
            lz.environment.as_str(),
            if lz.confirm { "yes" } else { "no" },
            lz.retention_days,
            if lz.enabled { "yes" } else { "no" },
            regions.join(","),
            lz.origin
        )?;
    }
    write!(out, "{} landing zone(s)", lzs.len())
}
