//! A simulated fleet described in YAML, for `prepatch demo --fleet`:
//! groups of instances per landing zone and region, each with its state,
//! platform, type, tags, SSM agent and volume size.
//!
//! ```yaml
//! instances:
//!   - landing_zone: demo-app-nonprod
//!     region: us-east-1
//!     count: 20
//!     state: stopped          # running (default) | stopped
//!     platform: windows       # linux (default) | windows
//!     type: m5.large          # default t3.medium
//!     agent: healthy          # healthy (default) | lost | missing
//!     volume_gb: 100          # default 30; AMIs take 90 s + 2 s per GB
//!     tags: {Name: web, Patch Group: web-nonprod}
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::world::Rng;
use super::{Agent, SimCloud};
use crate::config::LandingZone;
use crate::model::{Instance, InstanceId, InstanceState, Platform, Region, TagMap, tag};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FleetFile {
    instances: Vec<Group>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Group {
    landing_zone: String,
    region: String,
    #[serde(default = "one")]
    count: u32,
    #[serde(default)]
    state: GroupState,
    #[serde(default)]
    platform: GroupPlatform,
    #[serde(rename = "type", default = "default_type")]
    instance_type: String,
    #[serde(default)]
    agent: GroupAgent,
    #[serde(default = "default_volume")]
    volume_gb: u32,
    #[serde(default)]
    tags: BTreeMap<String, String>,
}

fn one() -> u32 {
    1
}

fn default_type() -> String {
    "t3.medium".into()
}

fn default_volume() -> u32 {
    30
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
enum GroupState {
    #[default]
    Running,
    Stopped,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
enum GroupPlatform {
    #[default]
    Linux,
    Windows,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
enum GroupAgent {
    #[default]
    Healthy,
    Lost,
    Missing,
}

/// Instances a fleet file may describe in all.
const MAX_INSTANCES: u64 = 1_000_000;

/// The AMI every simulated instance was launched from: what AWS names as a
/// backup's `SourceImageId` (its ancestry).
pub(super) const LAUNCH_AMI: &str = "ami-0a1b2c3d4e5f60718";

/// Builds the simulated cloud a fleet file describes, over the run's
/// landing zones. Errors are one line naming the file and the fix.
pub fn load(path: &Path, landing_zones: &[LandingZone]) -> Result<SimCloud, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the fleet file {}: {e}", path.display()))?;
    parse(&text, landing_zones).map_err(|e| format!("{}: {e}", path.display()))
}

fn parse(text: &str, landing_zones: &[LandingZone]) -> Result<SimCloud, String> {
    let file: FleetFile = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
    let total: u64 = file.instances.iter().map(|g| u64::from(g.count)).sum();
    if total == 0 {
        return Err("the fleet has no instances: add at least one group under `instances`".into());
    }
    if total > MAX_INSTANCES {
        return Err(format!(
            "{total} instances: a simulated fleet holds at most {MAX_INSTANCES}"
        ));
    }
    let sim = SimCloud::empty();
    let mut n: u64 = 0;
    for (i, g) in file.instances.iter().enumerate() {
        let at = format!("instances[{i}]");
        let lz = landing_zones
            .iter()
            .find(|lz| lz.name == g.landing_zone)
            .ok_or_else(|| {
                let names: Vec<&str> = landing_zones.iter().map(|l| l.name.as_str()).collect();
                format!(
                    "{at}: landing zone {:?} is not in the config; use one of {}",
                    g.landing_zone,
                    names.join(", ")
                )
            })?;
        let region: Region = g.region.parse().map_err(|_| {
            format!(
                "{at}.region: {:?} is not an AWS region name such as us-east-1",
                g.region
            )
        })?;
        if !lz.regions.contains(&region) {
            return Err(format!(
                "{at}: region {region} is not one of {}'s regions in the config",
                lz.name
            ));
        }
        for _ in 0..g.count {
            n += 1;
            let mut tags: TagMap = g.tags.clone().into_iter().collect();
            if tags.get("Name").is_none() {
                tags.insert("Name".into(), format!("{}-{n:05}", lz.name));
            }
            let instance = Instance {
                id: InstanceId::new(format!("i-0{:016x}", 0x000f_1ee7_0000_0000_u64 + n)),
                state: match g.state {
                    GroupState::Running => InstanceState::Running,
                    GroupState::Stopped => InstanceState::Stopped,
                },
                platform: match g.platform {
                    GroupPlatform::Linux => Platform::Linux,
                    GroupPlatform::Windows => Platform::Windows,
                },
                instance_type: g.instance_type.clone(),
                private_ip: Some(format!(
                    "10.{}.{}.{}",
                    (n >> 16) & 255,
                    (n >> 8) & 255,
                    n & 255
                )),
                launch_time: None,
                tags,
            };
            let agent = match g.agent {
                GroupAgent::Healthy => Agent::Healthy,
                GroupAgent::Lost => Agent::Lost,
                GroupAgent::Missing => Agent::Missing,
            };
            sim.add_described(
                &lz.account_id,
                &region,
                instance,
                g.volume_gb,
                agent,
                Duration::from_secs(20 + n % 60),
            );
        }
    }
    Ok(sim)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn lzs() -> Vec<LandingZone> {
        Config::parse(
            "aws: {regions: [us-east-1]}\nlanding_zones:\n  - {name: app-nonprod, account_id: \"111111111111\", environment: nonprod}\n",
            Path::new("t.yml"),
        )
        .expect("config")
        .landing_zones
    }

    #[test]
    fn groups_become_instances() {
        let sim = parse(
            "instances:\n  - {landing_zone: app-nonprod, region: us-east-1, count: 3, state: stopped, tags: {Patch Group: db}}\n  - {landing_zone: app-nonprod, region: us-east-1}\n",
            &lzs(),
        )
        .expect("fleet");
        let lz = &lzs()[0];
        let all = sim.instances(&lz.account_id, &lz.regions[0]);
        assert_eq!(all.len(), 4);
        let stopped = all.iter().filter(|i| i.state == InstanceState::Stopped);
        assert_eq!(stopped.clone().count(), 3);
        assert!(
            stopped
                .into_iter()
                .all(|i| i.tag("Patch Group") == Some("db"))
        );
    }

    #[test]
    fn mistakes_are_named() {
        let e = |text: &str| parse(text, &lzs()).err().expect("an error");
        assert!(e("instances: []").contains("no instances"));
        assert!(
            e("instances:\n  - {landing_zone: nope, region: us-east-1}").contains("app-nonprod")
        );
        assert!(
            e("instances:\n  - {landing_zone: app-nonprod, region: eu-west-1}").contains("regions")
        );
        assert!(
            e("instances:\n  - {landing_zone: app-nonprod, region: us-east-1, colour: red}")
                .contains("colour")
        );
        assert!(
            e("instances:\n  - {landing_zone: app-nonprod, region: us-east-1, state: paused}")
                .contains("paused")
        );
    }
}

/// What a simulated fleet looks like.
#[derive(Clone, Debug)]
pub struct FleetSpec {
    pub landing_zones: Vec<LandingZone>,
    /// Spread over every account-region.
    pub instances: usize,
    pub seed: u64,
    /// Share of instances stopped at the start.
    pub stopped_share: f64,
    /// Share of SSM agents missing or disconnected, as in a real fleet.
    pub agent_problems: f64,
}

const TYPES: [&str; 6] = [
    "t3.medium",
    "m5.large",
    "m5.xlarge",
    "c5.2xlarge",
    "r5.large",
    "t3.small",
];
const ROLES: [&str; 6] = ["web", "app", "db", "batch", "cache", "proxy"];

impl SimCloud {
    /// A reproducible fleet: same spec, same instances.
    pub fn generate(spec: &FleetSpec) -> Self {
        let sim = SimCloud::empty();
        let mut rng = Rng::new(spec.seed);
        let targets: Vec<(&LandingZone, &Region)> = spec
            .landing_zones
            .iter()
            .flat_map(|lz| lz.regions.iter().map(move |r| (lz, r)))
            .collect();
        for n in 0..spec.instances {
            let (lz, region) = targets[n % targets.len().max(1)];
            let role = *rng.pick(&ROLES);
            let state = if rng.chance(spec.stopped_share) {
                InstanceState::Stopped
            } else {
                InstanceState::Running
            };
            let platform = if rng.chance(0.3) {
                Platform::Windows
            } else {
                Platform::Linux
            };
            let mut tags = TagMap::from_iter([
                (
                    "Name".to_owned(),
                    format!("{}-{role}-{:03}", lz.name, n / targets.len().max(1) + 1),
                ),
                (tag::ENVIRONMENT.to_owned(), lz.environment.to_string()),
                (
                    tag::PATCH_GROUP.to_owned(),
                    format!("{role}-{}", lz.environment),
                ),
            ]);
            if rng.chance(0.5) {
                tags.insert("Owner".into(), format!("team-{}", rng.below(8)));
            }
            let agent = if !rng.chance(spec.agent_problems) {
                Agent::Healthy
            } else if rng.chance(0.5) {
                Agent::Missing
            } else {
                Agent::Lost
            };
            let id = InstanceId::new(format!("i-0{:016x}", rng.next_u64()));
            let instance = Instance {
                id,
                state,
                platform,
                instance_type: (*rng.pick(&TYPES)).to_owned(),
                private_ip: Some(format!(
                    "10.{}.{}.{}",
                    rng.below(256),
                    rng.below(256),
                    1 + rng.below(254)
                )),
                launch_time: chrono::DateTime::from_timestamp(
                    1_700_000_000 + rng.below(40_000_000) as i64,
                    0,
                ),
                tags,
            };
            let volume_gb = [8, 30, 50, 100, 200, 500][rng.below(6) as usize];
            let ssm_delay = Duration::from_secs(20 + rng.below(60));
            sim.add_described(
                &lz.account_id,
                region,
                instance,
                volume_gb,
                agent,
                ssm_delay,
            );
        }
        sim
    }
}
