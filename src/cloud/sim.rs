//! SimCloud: an in-memory EC2/SSM/STS on tokio time, for `prepatch demo`,
//! the fault tests and the benchmarks. The moto tests cover the real SDK.
//!
//! It behaves like AWS where prepatch depends on it: AMIs are `pending`
//! for a time that grows with volume size, starts take time, SSM agents
//! come Online some seconds after boot, status checks initialise, pages
//! hold what the real APIs hold, and EC2's token buckets
//! ([`limit::Bucket`](super::limit::Bucket)) answer `RequestLimitExceeded`
//! when overdrawn. Under a paused tokio clock an hour passes in
//! milliseconds.

use crate::model::TagMap;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet};
use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::limit::{Bucket, TokenBucket};
use super::{Api, ApiCalls, Cloud, CloudError, ErrorKind, ImageFilter, ImageRequest, Probe, Scope};
use crate::config::LandingZone;
use crate::model::{
    AccountId, AmiId, Image, ImageState, Instance, InstanceId, InstanceState, Platform, Region,
    SsmInfo, SsmPing, StateChange, StatusChecks, Tags, Target, tag,
};

/// Page sizes of the real APIs, for counting calls as AWS would.
const EC2_PAGE: usize = 1000;
const SSM_PAGE: usize = 50;

/// A fault to inject, by kind; [`SimCloud::inject`] picks its victim.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    AssumeRoleDenied,
    RegionUnreachable,
    CreateImageError,
    AmiFailed,
    AmiStuck,
    InsufficientCapacity,
    TerminatedBeforeStart,
    SsmNeverOnline,
    Impaired,
    StartDenied,
}

impl FaultKind {
    pub const ALL: [FaultKind; 10] = [
        FaultKind::AssumeRoleDenied,
        FaultKind::RegionUnreachable,
        FaultKind::CreateImageError,
        FaultKind::AmiFailed,
        FaultKind::AmiStuck,
        FaultKind::InsufficientCapacity,
        FaultKind::TerminatedBeforeStart,
        FaultKind::SsmNeverOnline,
        FaultKind::Impaired,
        FaultKind::StartDenied,
    ];

    /// The demo's default: a few instance faults, no landing zone lost.
    pub const DEMO: [FaultKind; 4] = [
        FaultKind::AmiFailed,
        FaultKind::InsufficientCapacity,
        FaultKind::SsmNeverOnline,
        FaultKind::Impaired,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::AssumeRoleDenied => "assume-role-denied",
            FaultKind::RegionUnreachable => "region-unreachable",
            FaultKind::CreateImageError => "create-image-error",
            FaultKind::AmiFailed => "ami-failed",
            FaultKind::AmiStuck => "ami-stuck",
            FaultKind::InsufficientCapacity => "insufficient-capacity",
            FaultKind::TerminatedBeforeStart => "terminated-before-start",
            FaultKind::SsmNeverOnline => "ssm-never-online",
            FaultKind::Impaired => "impaired",
            FaultKind::StartDenied => "start-denied",
        }
    }

    /// `none`, `all`, `default`, or a comma-separated list of names.
    pub fn parse_list(s: &str) -> Result<Vec<FaultKind>, String> {
        match s {
            "none" => return Ok(vec![]),
            "all" => return Ok(FaultKind::ALL.to_vec()),
            "default" => return Ok(FaultKind::DEMO.to_vec()),
            _ => {}
        }
        s.split(',').map(|n| n.trim().parse()).collect()
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for FaultKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        FaultKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = FaultKind::ALL.iter().map(|k| k.name()).collect();
                format!(
                    "unknown fault {s:?}: use none, all, default, or some of {}",
                    names.join(", ")
                )
            })
    }
}

/// An injected fault and where it strikes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    AssumeRoleDenied {
        landing_zone: String,
    },
    RegionUnreachable {
        landing_zone: String,
        region: Region,
    },
    CreateImageError(InstanceId),
    AmiFailed(InstanceId),
    AmiStuck(InstanceId),
    InsufficientCapacity(InstanceId),
    TerminatedBeforeStart(InstanceId),
    SsmNeverOnline(InstanceId),
    Impaired(InstanceId),
    /// The landing zone's role lacks `ec2:StartInstances`.
    StartDenied {
        landing_zone: String,
    },
}

impl Fault {
    pub fn kind(&self) -> FaultKind {
        match self {
            Fault::AssumeRoleDenied { .. } => FaultKind::AssumeRoleDenied,
            Fault::RegionUnreachable { .. } => FaultKind::RegionUnreachable,
            Fault::CreateImageError(_) => FaultKind::CreateImageError,
            Fault::AmiFailed(_) => FaultKind::AmiFailed,
            Fault::AmiStuck(_) => FaultKind::AmiStuck,
            Fault::InsufficientCapacity(_) => FaultKind::InsufficientCapacity,
            Fault::TerminatedBeforeStart(_) => FaultKind::TerminatedBeforeStart,
            Fault::SsmNeverOnline(_) => FaultKind::SsmNeverOnline,
            Fault::Impaired(_) => FaultKind::Impaired,
            Fault::StartDenied { .. } => FaultKind::StartDenied,
        }
    }

    /// The instance it strikes, if it strikes one.
    pub fn instance(&self) -> Option<&InstanceId> {
        match self {
            Fault::AssumeRoleDenied { .. }
            | Fault::RegionUnreachable { .. }
            | Fault::StartDenied { .. } => None,
            Fault::CreateImageError(i)
            | Fault::AmiFailed(i)
            | Fault::AmiStuck(i)
            | Fault::InsufficientCapacity(i)
            | Fault::TerminatedBeforeStart(i)
            | Fault::SsmNeverOnline(i)
            | Fault::Impaired(i) => Some(i),
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::AssumeRoleDenied { landing_zone } | Fault::StartDenied { landing_zone } => {
                write!(f, "{} in {landing_zone}", self.kind())
            }
            Fault::RegionUnreachable {
                landing_zone,
                region,
            } => {
                write!(f, "{} in {landing_zone}/{region}", self.kind())
            }
            _ => write!(
                f,
                "{} on {}",
                self.kind(),
                self.instance().map(|i| i.as_str()).unwrap_or_default()
            ),
        }
    }
}

/// A small, fast, reproducible generator (SplitMix64).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// The SSM agent on an instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Agent {
    /// Registers and reports Online a little after boot.
    Healthy,
    /// Registered, but lost its connection.
    Lost,
    /// Not installed: never registered.
    Missing,
}

#[derive(Clone, Debug)]
struct SimInstance {
    instance: Instance,
    volume_gb: u32,
    agent: Agent,
    /// When the current transition (pending, stopping) completes.
    settles_at: Instant,
    /// When it last became running (for SSM and status checks).
    running_since: Option<Instant>,
    ssm_delay: Duration,
}

impl SimInstance {
    /// Applies transitions that are due.
    fn tick(&mut self, now: Instant) {
        let state = &mut self.instance.state;
        if now >= self.settles_at {
            match *state {
                InstanceState::Pending => {
                    *state = InstanceState::Running;
                    self.running_since = Some(self.settles_at);
                }
                InstanceState::Stopping => *state = InstanceState::Stopped,
                InstanceState::ShuttingDown => *state = InstanceState::Terminated,
                _ => {}
            }
        }
    }

    fn ssm(&self, now: Instant, never_online: bool) -> Option<SsmInfo> {
        let version = Some("3.3.1142.0".to_owned());
        let ping = match self.agent {
            Agent::Missing => return None,
            Agent::Lost => SsmPing::ConnectionLost,
            Agent::Healthy => match (self.instance.state, self.running_since) {
                (InstanceState::Running, Some(since))
                    if now >= since + self.ssm_delay && !never_online =>
                {
                    SsmPing::Online
                }
                (InstanceState::Running, _) if never_online => SsmPing::ConnectionLost,
                (InstanceState::Running, _) => return None,
                _ => SsmPing::ConnectionLost,
            },
        };
        Some(SsmInfo {
            ping,
            agent_version: version,
        })
    }
}

#[derive(Clone, Debug)]
struct SimImage {
    image: Image,
    available_at: Instant,
    /// Where it ends when `available_at` comes.
    fate: ImageState,
}

/// Something in a world that changes state at a given time.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Due {
    Instance(InstanceId),
    /// An AMI, by its slot in [`Images`].
    Image(usize),
}

/// A world's AMIs, each in a slot of its own in the order they were made
/// (emptied when deregistered), found by id through an index. Answers that
/// list AMIs list them in that order; the run-id index holds slots, so a
/// run's poll walks its AMIs in memory order instead of looking each up.
#[derive(Debug, Default)]
struct Images {
    slots: Vec<Option<SimImage>>,
    by_id: HashMap<AmiId, usize>,
}

impl Images {
    fn slot(&self, id: &AmiId) -> Option<usize> {
        self.by_id.get(id).copied()
    }

    fn at(&self, slot: usize) -> Option<&SimImage> {
        self.slots.get(slot)?.as_ref()
    }

    fn at_mut(&mut self, slot: usize) -> Option<&mut SimImage> {
        self.slots.get_mut(slot)?.as_mut()
    }

    fn contains(&self, id: &AmiId) -> bool {
        self.by_id.contains_key(id)
    }

    /// Files a new AMI; returns its slot.
    fn insert(&mut self, image: SimImage) -> usize {
        let slot = self.slots.len();
        self.by_id.insert(image.image.id.clone(), slot);
        self.slots.push(Some(image));
        slot
    }

    fn remove(&mut self, id: &AmiId) -> Option<(usize, SimImage)> {
        let slot = self.by_id.remove(id)?;
        Some((slot, self.slots.get_mut(slot)?.take()?))
    }

    /// Every AMI, oldest first.
    fn iter(&self) -> impl Iterator<Item = &SimImage> {
        self.slots.iter().flatten()
    }
}

/// One account-region.
#[derive(Debug, Default)]
struct World {
    instances: BTreeMap<InstanceId, SimInstance>,
    images: Images,
    /// AMI names in use: EC2 refuses a second AMI of the same name.
    image_names: HashSet<String>,
    snapshot_tags: BTreeMap<String, TagMap>,
    buckets: HashMap<Bucket, TokenBucket>,
    /// Transitions to come, earliest first: a call applies only those that
    /// are due instead of looking at the whole world. An entry whose
    /// subject has moved on since is stale and skipped.
    due: BinaryHeap<Reverse<(Instant, Due)>>,
    /// AMIs by their `prepatch:run-id` tag, kept exact by [`World::reindex`]
    /// after every change of an AMI's tags: a run polls its AMIs by that tag
    /// a dozen times per account-region, and reading every AMI's tags for it
    /// was an eighth of a large backup.
    by_run_id: HashMap<String, BTreeSet<usize>>,
}

impl World {
    /// Files the AMI in `slot` under its `prepatch:run-id` tag as it is now
    /// (none if it is gone), after its tags changed or it went.
    fn reindex(&mut self, slot: usize, was: Option<&str>) {
        let now = self
            .images
            .at(slot)
            .and_then(|i| i.image.tags.get(tag::RUN_ID));
        if was == now.map(String::as_str) {
            return;
        }
        if let Some(slots) = was.and_then(|w| self.by_run_id.get_mut(w)) {
            slots.remove(&slot);
        }
        if let Some(run) = now {
            match self.by_run_id.get_mut(run.as_str()) {
                Some(slots) => {
                    slots.insert(slot);
                }
                None => {
                    self.by_run_id.insert(run.clone(), BTreeSet::from([slot]));
                }
            }
        }
    }

    /// Changes an AMI's tags, and files it again.
    fn retag_image(&mut self, id: &AmiId, change: impl FnOnce(&mut TagMap)) {
        let Some(slot) = self.images.slot(id) else {
            return;
        };
        let Some(img) = self.images.at_mut(slot) else {
            return;
        };
        let was = img.image.tags.get(tag::RUN_ID).cloned();
        change(&mut img.image.tags);
        self.reindex(slot, was.as_deref());
    }

    /// Applies the transitions that are due.
    fn tick(&mut self, now: Instant) {
        while let Some(Reverse((at, _))) = self.due.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, what))) = self.due.pop() else {
                break;
            };
            match what {
                Due::Instance(id) => {
                    if let Some(i) = self.instances.get_mut(&id) {
                        i.tick(now);
                    }
                }
                Due::Image(slot) => {
                    let Some(img) = self.images.at_mut(slot) else {
                        continue;
                    };
                    if img.image.state != ImageState::Pending
                        || img.fate == ImageState::Pending
                        || now < img.available_at
                    {
                        continue;
                    }
                    img.image.state = img.fate;
                    if img.fate == ImageState::Failed {
                        img.image.state_reason =
                            Some("Client.InternalError: snapshot creation failed".into());
                    }
                }
            }
        }
    }

    /// `what` changes state at `at`.
    fn schedule(&mut self, at: Instant, what: Due) {
        self.due.push(Reverse((at, what)));
    }

    /// An instance enters `state` (pending, stopping), settling at `at`.
    fn transition(&mut self, id: &InstanceId, state: InstanceState, at: Instant) {
        if let Some(i) = self.instances.get_mut(id) {
            i.instance.state = state;
            i.settles_at = at;
            if state == InstanceState::Stopping {
                i.running_since = None;
            }
            self.schedule(at, Due::Instance(id.clone()));
        }
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

/// The simulated cloud.
pub struct SimCloud {
    worlds: Mutex<HashMap<(AccountId, Region), World>>,
    faults: Mutex<Vec<Fault>>,
    throttling: bool,
    calls: ApiCalls,
    next_id: AtomicU64,
    /// Calls refused per action because a bucket was empty.
    throttled: Mutex<BTreeMap<Api, u64>>,
    /// Order of mutating calls per instance, for "backup before start" checks.
    /// Ids shared with the world, not copied: a large run makes 120,000
    /// of these calls.
    log: Mutex<Vec<(Api, std::sync::Arc<str>)>>,
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
    /// An empty cloud; add instances with [`SimCloud::add_instance`].
    pub fn empty() -> Self {
        SimCloud {
            worlds: Mutex::default(),
            faults: Mutex::default(),
            throttling: true,
            calls: ApiCalls::default(),
            next_id: AtomicU64::new(1),
            throttled: Mutex::default(),
            log: Mutex::default(),
        }
    }

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
            sim.add(
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

    /// Turns EC2's rate limits off (for tests of logic, not pacing).
    pub fn without_throttling(mut self) -> Self {
        self.throttling = false;
        self
    }

    /// Adds one instance.
    /// Adds an instance with its volume size and agent timing (a fleet
    /// described in YAML).
    pub fn add_described(
        &self,
        account: &AccountId,
        region: &Region,
        instance: Instance,
        volume_gb: u32,
        agent: Agent,
        ssm_delay: Duration,
    ) {
        self.add(account, region, instance, volume_gb, agent, ssm_delay);
    }

    pub fn add_instance(
        &self,
        account: &AccountId,
        region: &Region,
        instance: Instance,
        agent: Agent,
    ) {
        self.add(
            account,
            region,
            instance,
            30,
            agent,
            Duration::from_secs(30),
        );
    }

    fn add(
        &self,
        account: &AccountId,
        region: &Region,
        instance: Instance,
        volume_gb: u32,
        agent: Agent,
        ssm_delay: Duration,
    ) {
        let now = Instant::now();
        let running = instance.state == InstanceState::Running;
        let sim = SimInstance {
            instance,
            volume_gb,
            agent,
            settles_at: now,
            // Long-running instances are past their boot.
            running_since: running
                .then(|| now.checked_sub(Duration::from_secs(3600)).unwrap_or(now)),
            ssm_delay,
        };
        let mut worlds = self.worlds.lock().unwrap_or_else(|e| e.into_inner());
        let world = worlds.entry((account.clone(), region.clone())).or_default();
        if matches!(
            sim.instance.state,
            InstanceState::Pending | InstanceState::Stopping | InstanceState::ShuttingDown
        ) {
            world.schedule(sim.settles_at, Due::Instance(sim.instance.id.clone()));
        }
        world.instances.insert(sim.instance.id.clone(), sim);
    }

    /// Injects a fault.
    pub fn fault(&self, fault: Fault) {
        self.faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(fault);
    }

    /// Injects one fault of each kind, each on a victim chosen from the
    /// seed: landing zone faults on the last nonprod landing zone, start
    /// faults on stopped instances. Returns what was injected.
    pub fn inject(
        &self,
        kinds: &[FaultKind],
        landing_zones: &[LandingZone],
        seed: u64,
    ) -> Vec<Fault> {
        if kinds.is_empty() {
            return Vec::new();
        }
        let mut rng = Rng::new(seed ^ 0xFA17);
        let victim_lz = landing_zones
            .iter()
            .rev()
            .find(|lz| lz.environment == crate::model::Environment::Nonprod)
            .or(landing_zones.last());
        let (running, stopped): (Vec<InstanceId>, Vec<InstanceId>) = {
            let worlds = self.worlds.lock().unwrap_or_else(|e| e.into_inner());
            let mut all: Vec<&SimInstance> =
                worlds.values().flat_map(|w| w.instances.values()).collect();
            all.sort_by(|a, b| a.instance.id.cmp(&b.instance.id));
            let ids = |s: InstanceState| {
                all.iter()
                    .filter(|i| i.instance.state == s)
                    .map(|i| i.instance.id.clone())
                    .collect::<Vec<_>>()
            };
            (ids(InstanceState::Running), ids(InstanceState::Stopped))
        };
        let mut used = BTreeSet::new();
        let mut pick = |from: &[InstanceId], rng: &mut Rng| -> Option<InstanceId> {
            let free: Vec<&InstanceId> = from.iter().filter(|i| !used.contains(*i)).collect();
            let id = (*free.get(rng.below(free.len() as u64) as usize)?).clone();
            used.insert(id.clone());
            Some(id)
        };
        let mut out = Vec::new();
        for kind in kinds {
            let fault = match kind {
                FaultKind::AssumeRoleDenied => victim_lz.map(|lz| Fault::AssumeRoleDenied {
                    landing_zone: lz.name.clone(),
                }),
                FaultKind::RegionUnreachable => victim_lz.and_then(|lz| {
                    Some(Fault::RegionUnreachable {
                        landing_zone: lz.name.clone(),
                        region: lz.regions.last()?.clone(),
                    })
                }),
                FaultKind::CreateImageError => {
                    pick(&running, &mut rng).map(Fault::CreateImageError)
                }
                FaultKind::AmiFailed => pick(&running, &mut rng).map(Fault::AmiFailed),
                FaultKind::AmiStuck => pick(&running, &mut rng).map(Fault::AmiStuck),
                FaultKind::InsufficientCapacity => {
                    pick(&stopped, &mut rng).map(Fault::InsufficientCapacity)
                }
                FaultKind::TerminatedBeforeStart => {
                    pick(&stopped, &mut rng).map(Fault::TerminatedBeforeStart)
                }
                FaultKind::SsmNeverOnline => pick(&stopped, &mut rng).map(Fault::SsmNeverOnline),
                FaultKind::Impaired => pick(&running, &mut rng).map(Fault::Impaired),
                FaultKind::StartDenied => victim_lz.map(|lz| Fault::StartDenied {
                    landing_zone: lz.name.clone(),
                }),
            };
            if let Some(f) = fault {
                self.fault(f.clone());
                out.push(f);
            }
        }
        out
    }

    fn has_fault(&self, f: impl Fn(&Fault) -> bool) -> bool {
        self.faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(f)
    }

    /// The refusal of an action the landing zone's role may not call.
    fn denied(&self, t: &Target, api: Api) -> Option<CloudError> {
        let denied = api == Api::StartInstances
            && self.has_fault(
                |f| matches!(f, Fault::StartDenied { landing_zone } if *landing_zone == t.landing_zone),
            );
        denied.then(|| {
            CloudError::new(
                api,
                ErrorKind::Denied,
                "UnauthorizedOperation",
                format!("You are not authorized to perform this operation. User: arn:aws:sts::{}:assumed-role/PrepatchRole/prepatch is not authorized to perform: ec2:{api}", t.account),
            )
        })
    }

    /// The instances struck by faults of `kind`.
    fn fault_ids(&self, kind: FaultKind) -> HashSet<InstanceId> {
        self.faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|f| f.kind() == kind)
            .filter_map(|f| f.instance().cloned())
            .collect()
    }

    fn instance_fault(&self, kind: FaultKind, id: &InstanceId) -> bool {
        self.has_fault(|f| f.kind() == kind && f.instance() == Some(id))
    }

    /// Every AMI in a target, as EC2 would describe it now.
    pub fn images(&self, account: &AccountId, region: &Region) -> Vec<Image> {
        self.with_world_at(account, region, |w| {
            w.images.iter().map(|i| i.image.clone()).collect()
        })
    }

    /// The tags of a snapshot.
    pub fn snapshot_tags(&self, account: &AccountId, region: &Region, snapshot: &str) -> TagMap {
        self.with_world_at(account, region, |w| {
            w.snapshot_tags.get(snapshot).cloned().unwrap_or_default()
        })
    }

    /// Every instance in a target, now.
    pub fn instances(&self, account: &AccountId, region: &Region) -> Vec<Instance> {
        self.with_world_at(account, region, |w| {
            w.instances.values().map(|i| i.instance.clone()).collect()
        })
    }

    /// Mutating calls in the order they were made: (action, instance id).
    pub fn mutation_log(&self) -> Vec<(Api, String)> {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(api, id)| (*api, id.to_string()))
            .collect()
    }

    /// Calls refused by a rate limit, by action.
    pub fn throttled(&self) -> BTreeMap<Api, u64> {
        self.throttled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn with_world_at<T>(
        &self,
        account: &AccountId,
        region: &Region,
        f: impl FnOnce(&mut World) -> T,
    ) -> T {
        let mut worlds = self.worlds.lock().unwrap_or_else(|e| e.into_inner());
        let world = worlds.entry((account.clone(), region.clone())).or_default();
        world.tick(Instant::now());
        f(world)
    }

    /// Runs one request against a target's world: checks reachability and
    /// the rate limit, then applies `f`. Counts the call.
    fn request<T>(
        &self,
        t: &Target,
        api: Api,
        pages: impl Fn(&World) -> usize,
        instances: usize,
        f: impl FnOnce(&mut World, Instant) -> Result<T, CloudError>,
    ) -> Result<T, CloudError> {
        if self.has_fault(|f| matches!(f, Fault::RegionUnreachable { landing_zone, region } if *landing_zone == t.landing_zone && *region == t.region))
        {
            let e = CloudError::new(
                api,
                ErrorKind::Unreachable,
                "Unreachable",
                format!("no answer from AWS: dispatch failure: connection to ec2.{}.amazonaws.com timed out", t.region),
            );
            self.calls.record_n(api, 1, Some(&e));
            return Err(e);
        }
        let mut worlds = self.worlds.lock().unwrap_or_else(|e| e.into_inner());
        let world = worlds
            .entry((t.account.clone(), t.region.clone()))
            .or_default();
        let now = Instant::now();
        world.tick(now);
        let pages = pages(world).max(1);
        // Each page is a request and draws its own token.
        for page in 0..pages {
            if self.throttling && !take_tokens(world, api, instances) {
                let e = CloudError::new(
                    api,
                    ErrorKind::Throttled,
                    "RequestLimitExceeded",
                    "Request limit exceeded.",
                );
                *self
                    .throttled
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(api)
                    .or_default() += 1;
                self.calls.record_n(api, page as u64 + 1, Some(&e));
                return Err(e);
            }
        }
        let result = f(world, now);
        self.calls
            .record_n(api, pages as u64, result.as_ref().err());
        result
    }

    /// A read-only call: its answer is made once, and takes a token per
    /// page of `page` items, as AWS counts them (a throttled answer is
    /// thrown away).
    fn read<T>(
        &self,
        t: &Target,
        api: Api,
        page: usize,
        answer: impl Fn(&World) -> Vec<T>,
    ) -> Result<Vec<T>, CloudError> {
        let made = std::cell::RefCell::new(Vec::new());
        self.request(
            t,
            api,
            |w| {
                let items = answer(w);
                let pages = items.len().div_ceil(page);
                *made.borrow_mut() = items;
                pages
            },
            0,
            |_, _| Ok(made.take()),
        )
    }

    fn next(&self, prefix: &str) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        format!("{prefix}-0{:016x}", n.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    /// Sets a tag on an AMI, as another tool or a person would (tests:
    /// age an AMI's `prepatch:expires-at`, forge a tag).
    pub fn set_image_tag(
        &self,
        account: &AccountId,
        region: &Region,
        ami: &AmiId,
        key: &str,
        value: &str,
    ) {
        self.with_world_at(account, region, |w| {
            w.retag_image(ami, |tags| {
                tags.insert(key.to_owned(), value.to_owned());
            });
        });
    }

    /// Sets a tag on an instance, as another tool or a person would.
    pub fn set_instance_tag(
        &self,
        account: &AccountId,
        region: &Region,
        id: &InstanceId,
        key: &str,
        value: &str,
    ) {
        self.with_world_at(account, region, |w| {
            if let Some(i) = w.instances.get_mut(id) {
                i.instance.tags.insert(key.to_owned(), value.to_owned());
            }
        });
    }

    /// Snapshots known in a target (those with tags), by id.
    pub fn snapshot_ids(&self, account: &AccountId, region: &Region) -> Vec<String> {
        self.with_world_at(account, region, |w| {
            w.snapshot_tags.keys().cloned().collect()
        })
    }
}

/// Takes a call's tokens from every bucket it draws on, or none.
fn take_tokens(world: &mut World, api: Api, instances: usize) -> bool {
    let needs = Bucket::for_call(api, instances);
    let mut taken = Vec::new();
    for (bucket, n) in needs {
        let b = world
            .buckets
            .entry(bucket)
            .or_insert_with(|| TokenBucket::full(bucket.rate()));
        if b.try_take(n) {
            taken.push((bucket, n));
        } else {
            for (bucket, n) in taken {
                if let Some(b) = world.buckets.get_mut(&bucket) {
                    b.give_back(n);
                }
            }
            return false;
        }
    }
    true
}

fn not_found(api: Api, id: &str) -> CloudError {
    CloudError::new(
        api,
        ErrorKind::Api,
        "InvalidInstanceID.NotFound",
        format!("The instance ID '{id}' does not exist"),
    )
}

#[async_trait]
impl Cloud for SimCloud {
    async fn assume_role(&self, lz: &LandingZone, _session: &str) -> Result<String, CloudError> {
        let denied = self.has_fault(
            |f| matches!(f, Fault::AssumeRoleDenied { landing_zone } if *landing_zone == lz.name),
        );
        let result = if denied {
            Err(CloudError::new(
                Api::AssumeRole,
                ErrorKind::Denied,
                "AccessDenied",
                format!(
                    "User: arn:aws:iam::123456789012:user/operator is not authorized to perform: sts:AssumeRole on resource: {}",
                    lz.role_arn
                ),
            ))
        } else {
            Ok(lz
                .role_arn
                .replace(":iam::", ":sts::")
                .replace(":role/", ":assumed-role/")
                + "/prepatch")
        };
        self.calls.record(Api::AssumeRole, &result);
        result
    }

    async fn describe_instances(
        &self,
        t: &Target,
        scope: Scope,
    ) -> Result<Vec<Instance>, CloudError> {
        let wanted = move |i: &&SimInstance| scope == Scope::All || !i.instance.state.is_gone();
        self.read(t, Api::DescribeInstances, EC2_PAGE, |w| {
            w.instances
                .values()
                .filter(wanted)
                .map(|i| i.instance.clone())
                .collect()
        })
    }

    async fn ssm_info(
        &self,
        t: &Target,
        only: Option<&[InstanceId]>,
    ) -> Result<BTreeMap<InstanceId, SsmInfo>, CloudError> {
        let never_online = self.fault_ids(FaultKind::SsmNeverOnline);
        let asked: Option<HashSet<&InstanceId>> = only.map(|ids| ids.iter().collect());
        let registered = |w: &World, now: Instant| -> Vec<(InstanceId, SsmInfo)> {
            w.instances
                .values()
                .filter(|i| asked.as_ref().is_none_or(|a| a.contains(&i.instance.id)))
                .filter_map(|i| {
                    let info = i.ssm(now, never_online.contains(&i.instance.id))?;
                    Some((i.instance.id.clone(), info))
                })
                .collect()
        };
        // Pages per filter chunk, as the AWS implementation sends them.
        let requests = only.map_or(1, |ids| ids.len().div_ceil(crate::cloud::SSM_FILTER_IDS));
        let now = Instant::now();
        self.request(
            t,
            Api::DescribeInstanceInformation,
            |w| {
                let found = registered(w, now).len();
                found.div_ceil(SSM_PAGE).max(requests)
            },
            0,
            |w, now| Ok(registered(w, now).into_iter().collect()),
        )
    }

    async fn create_image(&self, t: &Target, req: &ImageRequest) -> Result<AmiId, CloudError> {
        let error = self.instance_fault(FaultKind::CreateImageError, &req.instance);
        let failed = self.instance_fault(FaultKind::AmiFailed, &req.instance);
        let stuck = self.instance_fault(FaultKind::AmiStuck, &req.instance);
        let ami = AmiId::new(self.next("ami"));
        let snaps: std::sync::Arc<[String]> = [self.next("snap")].into();
        let result = self.request(
            t,
            Api::CreateImage,
            |_| 1,
            0,
            |w, now| {
                let Some(i) = w
                    .instances
                    .get(&req.instance)
                    .filter(|i| !i.instance.state.is_gone())
                else {
                    return Err(not_found(Api::CreateImage, req.instance.as_str()));
                };
                if error {
                    return Err(CloudError::new(
                        Api::CreateImage,
                        ErrorKind::Api,
                        "InvalidParameterValue",
                        format!(
                            "Instance '{}' has an unsupported root device for imaging",
                            req.instance
                        ),
                    ));
                }
                if w.image_names.contains(&req.name) {
                    return Err(CloudError::new(
                        Api::CreateImage,
                        ErrorKind::Api,
                        "InvalidAMIName.Duplicate",
                        format!("AMI name {} is already in use by an AMI", req.name),
                    ));
                }
                // Roughly what EBS snapshots take: a base plus time per GB.
                let takes = Duration::from_secs(90 + u64::from(i.volume_gb) * 2);
                let image = Image {
                    id: ami.clone(),
                    name: req.name.as_str().into(),
                    state: ImageState::Pending,
                    state_reason: None,
                    tags: req.tags.clone(),
                    snapshot_ids: snaps.clone(),
                    source_instance: Some(req.instance.clone()),
                    source_image: None,
                };
                // The snapshot tag specification: tagged as they are made.
                if !req.snapshot_tags.is_empty() {
                    for s in snaps.iter() {
                        w.snapshot_tags.insert(s.clone(), req.snapshot_tags.clone());
                    }
                }
                let fate = if stuck {
                    ImageState::Pending
                } else if failed {
                    ImageState::Failed
                } else {
                    ImageState::Available
                };
                w.image_names.insert(req.name.clone());
                let slot = w.images.insert(SimImage {
                    image,
                    available_at: now + takes,
                    fate,
                });
                w.reindex(slot, None);
                w.schedule(now + takes, Due::Image(slot));
                Ok(ami.clone())
            },
        );
        if result.is_ok() {
            self.log
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((Api::CreateImage, req.instance.shared()));
        }
        result
    }

    async fn describe_images(
        &self,
        t: &Target,
        filter: &ImageFilter,
    ) -> Result<Vec<Image>, CloudError> {
        // A scan, not a binary search: with a handful of tags, comparing
        // lengths first settles most keys without looking at their bytes.
        let matches = move |i: &&SimImage| match filter {
            ImageFilter::Tag(k, v) => i.image.tags.iter().any(|(key, val)| key == k && val == v),
            ImageFilter::Name(n) => *i.image.name == **n,
            ImageFilter::Owned => true,
        };
        self.read(t, Api::DescribeImages, EC2_PAGE, |w| match filter {
            ImageFilter::Tag(k, v) if k == tag::RUN_ID => w
                .by_run_id
                .get(v)
                .into_iter()
                .flatten()
                .filter_map(|&slot| w.images.at(slot))
                .map(|i| i.image.clone())
                .collect(),
            _ => w
                .images
                .iter()
                .filter(matches)
                .map(|i| i.image.clone())
                .collect(),
        })
    }

    async fn create_tags(
        &self,
        t: &Target,
        resources: &[String],
        tags: &Tags,
    ) -> Result<(), CloudError> {
        self.request(
            t,
            Api::CreateTags,
            |_| 1,
            0,
            |w, _| {
                let mut fresh: Option<TagMap> = None;
                for r in resources {
                    if let Some(i) = w.instances.get_mut(&InstanceId::new(r.clone())) {
                        i.instance.tags.extend(tags.iter().cloned());
                    } else if w.images.contains(&AmiId::new(r)) {
                        w.retag_image(&AmiId::new(r), |have| {
                            have.extend(tags.iter().cloned());
                        });
                    } else if r.starts_with("snap-") {
                        // Snapshots tagged alike share one map: a run tags
                        // 100,000 of them, a thousand in a call.
                        let have = w.snapshot_tags.entry(r.clone()).or_default();
                        if have.is_empty() {
                            *have = fresh
                                .get_or_insert_with(|| tags.iter().cloned().collect())
                                .clone();
                        } else {
                            have.extend(tags.iter().cloned());
                        }
                    } else {
                        return Err(CloudError::new(
                            Api::CreateTags,
                            ErrorKind::Api,
                            "InvalidID",
                            format!("The ID '{r}' is not valid"),
                        ));
                    }
                }
                Ok(())
            },
        )
    }

    async fn start_instances(
        &self,
        t: &Target,
        ids: &[InstanceId],
    ) -> Result<Vec<StateChange>, CloudError> {
        if let Some(e) = self.denied(t, Api::StartInstances) {
            self.calls.record_n(Api::StartInstances, 1, Some(&e));
            return Err(e);
        }
        let capacity = ids
            .iter()
            .any(|id| self.instance_fault(FaultKind::InsufficientCapacity, id));
        let doomed: Vec<&InstanceId> = ids
            .iter()
            .filter(|id| self.instance_fault(FaultKind::TerminatedBeforeStart, id))
            .collect();
        let result = self.request(t, Api::StartInstances, |_| 1, ids.len(), |w, now| {
            // Terminated under us, between the scan and this call.
            for id in &doomed {
                if let Some(i) = w.instances.get_mut(*id) {
                    i.instance.state = InstanceState::Terminated;
                }
            }
            for id in ids {
                let Some(i) = w.instances.get(id) else {
                    return Err(not_found(Api::StartInstances, id.as_str()));
                };
                if !matches!(i.instance.state, InstanceState::Stopped | InstanceState::Running | InstanceState::Pending) {
                    return Err(CloudError::new(
                        Api::StartInstances,
                        ErrorKind::Api,
                        "IncorrectInstanceState",
                        format!("The instance '{id}' is not in a state from which it can be started."),
                    ));
                }
            }
            if capacity {
                return Err(CloudError::new(
                    Api::StartInstances,
                    ErrorKind::Api,
                    "InsufficientInstanceCapacity",
                    "We currently do not have sufficient capacity in the Availability Zone you requested.",
                ));
            }
            let mut changes = Vec::with_capacity(ids.len());
            for (n, id) in ids.iter().enumerate() {
                let previous = w.instances.get(id).map_or(InstanceState::Unknown, |i| i.instance.state);
                let mut current = previous;
                if previous == InstanceState::Stopped {
                    let at = now + Duration::from_secs(25 + (n as u64 * 7) % 30);
                    w.transition(id, InstanceState::Pending, at);
                    current = InstanceState::Pending;
                }
                changes.push(StateChange { id: id.clone(), previous, current });
            }
            Ok(changes)
        });
        if result.is_ok() {
            let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
            log.extend(ids.iter().map(|id| (Api::StartInstances, id.shared())));
        }
        result
    }

    async fn instance_status(&self, t: &Target) -> Result<Vec<StatusChecks>, CloudError> {
        let impaired_ids = self.fault_ids(FaultKind::Impaired);
        let impaired = |id: &InstanceId| impaired_ids.contains(id);
        self.request(
            t,
            Api::DescribeInstanceStatus,
            |w| w.instances.len().div_ceil(EC2_PAGE),
            0,
            |w, now| {
                Ok(w.instances
                    .values()
                    .map(|i| {
                        let status = match (i.instance.state, i.running_since) {
                            (InstanceState::Running, _) if impaired(&i.instance.id) => "impaired",
                            (InstanceState::Running, Some(since))
                                if now >= since + Duration::from_secs(120) =>
                            {
                                "ok"
                            }
                            (InstanceState::Running, _) => "initializing",
                            _ => "not-applicable",
                        };
                        StatusChecks {
                            id: i.instance.id.clone(),
                            state: i.instance.state,
                            instance_status: status.to_owned(),
                            system_status: if status == "impaired" {
                                "ok".into()
                            } else {
                                status.to_owned()
                            },
                        }
                    })
                    .collect())
            },
        )
    }

    async fn permitted(&self, t: &Target, probe: &Probe) -> Result<(), CloudError> {
        let api = probe.api();
        if let Some(e) = self.denied(t, api) {
            self.calls.record_n(api, 1, Some(&e));
            return Err(e);
        }
        // The request is checked and counted like any other, changing nothing.
        self.request(t, api, |_| 1, 0, |_, _| Ok(()))
    }

    async fn stop_instances(
        &self,
        t: &Target,
        ids: &[InstanceId],
    ) -> Result<Vec<StateChange>, CloudError> {
        let result = self.request(
            t,
            Api::StopInstances,
            |_| 1,
            ids.len(),
            |w, now| {
                for id in ids {
                    if !w.instances.contains_key(id) {
                        return Err(not_found(Api::StopInstances, id.as_str()));
                    }
                }
                let mut changes = Vec::with_capacity(ids.len());
                for (n, id) in ids.iter().enumerate() {
                    let previous = w
                        .instances
                        .get(id)
                        .map_or(InstanceState::Unknown, |i| i.instance.state);
                    let mut current = previous;
                    if matches!(previous, InstanceState::Running | InstanceState::Pending) {
                        let at = now + Duration::from_secs(20 + (n as u64 * 5) % 40);
                        w.transition(id, InstanceState::Stopping, at);
                        current = InstanceState::Stopping;
                    }
                    changes.push(StateChange {
                        id: id.clone(),
                        previous,
                        current,
                    });
                }
                Ok(changes)
            },
        );
        if result.is_ok() {
            let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
            log.extend(ids.iter().map(|id| (Api::StopInstances, id.shared())));
        }
        result
    }

    async fn deregister_image(&self, t: &Target, ami: &AmiId) -> Result<(), CloudError> {
        self.request(
            t,
            Api::DeregisterImage,
            |_| 1,
            0,
            |w, _| {
                let Some((slot, img)) = w.images.remove(ami) else {
                    return Err(CloudError::new(
                        Api::DeregisterImage,
                        ErrorKind::Api,
                        "InvalidAMIID.NotFound",
                        format!("The image id '[{ami}]' does not exist"),
                    ));
                };
                w.image_names.remove(&*img.image.name);
                w.reindex(slot, img.image.tags.get(tag::RUN_ID).map(String::as_str));
                Ok(())
            },
        )
    }

    async fn describe_snapshots(
        &self,
        t: &Target,
        key: &str,
        value: &str,
    ) -> Result<Vec<crate::model::Snapshot>, CloudError> {
        let found = |w: &World| -> Vec<crate::model::Snapshot> {
            w.snapshot_tags
                .iter()
                .filter(|(_, tags)| tags.get(key).map(String::as_str) == Some(value))
                .map(|(id, tags)| crate::model::Snapshot {
                    id: id.clone(),
                    tags: tags.clone(),
                })
                .collect()
        };
        self.read(t, Api::DescribeSnapshots, EC2_PAGE, found)
    }

    async fn delete_snapshot(&self, t: &Target, snapshot: &str) -> Result<(), CloudError> {
        self.request(
            t,
            Api::DeleteSnapshot,
            |_| 1,
            0,
            |w, _| {
                if let Some(img) = w
                    .images
                    .iter()
                    .find(|i| i.image.snapshot_ids.iter().any(|s| s == snapshot))
                {
                    return Err(CloudError::new(
                        Api::DeleteSnapshot,
                        ErrorKind::Api,
                        "InvalidSnapshot.InUse",
                        format!(
                            "The snapshot {snapshot} is currently in use by {}",
                            img.image.id
                        ),
                    ));
                }
                if w.snapshot_tags.remove(snapshot).is_none() {
                    return Err(CloudError::new(
                        Api::DeleteSnapshot,
                        ErrorKind::Api,
                        "InvalidSnapshot.NotFound",
                        format!("The snapshot '{snapshot}' does not exist."),
                    ));
                }
                Ok(())
            },
        )
    }

    async fn delete_tags(
        &self,
        t: &Target,
        resources: &[String],
        tags: &Tags,
    ) -> Result<(), CloudError> {
        let drop_from = |have: &mut TagMap| {
            for (k, v) in tags {
                if v.is_empty() || have.get(k) == Some(v) {
                    have.remove(k);
                }
            }
        };
        self.request(
            t,
            Api::DeleteTags,
            |_| 1,
            0,
            |w, _| {
                for r in resources {
                    if let Some(i) = w.instances.get_mut(&InstanceId::new(r.clone())) {
                        drop_from(&mut i.instance.tags);
                    } else if w.images.contains(&AmiId::new(r)) {
                        w.retag_image(&AmiId::new(r), drop_from);
                    } else if let Some(snap) = w.snapshot_tags.get_mut(r) {
                        drop_from(snap);
                    }
                }
                Ok(())
            },
        )
    }

    async fn enable_image_deprecation(
        &self,
        t: &Target,
        ami: &AmiId,
        _at: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), CloudError> {
        let result = self.request(
            t,
            Api::EnableImageDeprecation,
            |_| 1,
            0,
            |w, _| {
                if w.images.contains(ami) {
                    Ok(())
                } else {
                    Err(CloudError::new(
                        Api::EnableImageDeprecation,
                        ErrorKind::Api,
                        "InvalidAMIID.NotFound",
                        format!("The image id '[{ami}]' does not exist"),
                    ))
                }
            },
        );
        if result.is_ok() {
            self.log
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((Api::EnableImageDeprecation, ami.shared()));
        }
        result
    }

    fn api_calls(&self) -> &ApiCalls {
        &self.calls
    }

    fn is_simulated(&self) -> bool {
        true
    }
}
