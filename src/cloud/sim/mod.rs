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
//!
//! Its rooms: `world` (one account-region's instances, AMIs and clock),
//! `faults` (what can be made to go wrong, and where), `fleet` (the
//! generated or YAML-described fleet), `answers` (the
//! [`Cloud`](crate::cloud::Cloud) impl:
//! what each call answers).

mod answers;
mod faults;
pub mod fleet;
mod world;

use answers::take_tokens;
pub use faults::{Fault, FaultKind};
pub use fleet::FleetSpec;
pub use world::{Agent, Rng};
use world::{Due, SimInstance, World};

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::cloud::{Api, ApiCalls, CloudError, ErrorKind, Page};
use crate::model::{
    AccountId, AmiId, Image, Instance, InstanceId, InstanceState, Region, TagMap, Target,
};

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
    /// The tokio time and the wall time it stands for: times AWS gives as
    /// text (a task's start) are read from it.
    epoch: (Instant, chrono::DateTime<chrono::Utc>),
}

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
            epoch: (Instant::now(), chrono::Utc::now()),
        }
    }

    /// `at` as AWS writes a time (`2026-12-06T11:14:16.000Z`).
    fn utc(&self, at: Instant) -> String {
        self.wall(at)
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    }

    /// The wall time that tokio's `at` stands for.
    fn wall(&self, at: Instant) -> chrono::DateTime<chrono::Utc> {
        let since = at.saturating_duration_since(self.epoch.0);
        self.epoch.1 + chrono::Duration::from_std(since).unwrap_or_default()
    }

    /// Turns EC2's rate limits off (for tests of logic, not pacing).
    pub fn without_throttling(mut self) -> Self {
        self.throttling = false;
        self
    }

    /// Adds an instance: 30 GB, its agent Online 30 s after it runs.
    pub fn add_instance(
        &self,
        account: &AccountId,
        region: &Region,
        instance: Instance,
        agent: Agent,
    ) {
        self.add_described(
            account,
            region,
            instance,
            30,
            agent,
            Duration::from_secs(30),
        );
    }

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
            self.calls.request(api, Some(&e));
            return Err(e);
        }
        let mut worlds = self.worlds.lock().unwrap_or_else(|e| e.into_inner());
        let world = worlds
            .entry((t.account.clone(), t.region.clone()))
            .or_default();
        let now = Instant::now();
        world.tick(now);
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
            self.calls.request(api, Some(&e));
            return Err(e);
        }
        let result = f(world, now);
        self.calls.request(api, result.as_ref().err());
        result
    }

    /// One page of a listing, `size` items at most: the items from the
    /// token's offset on. The answer is made afresh for each page, as AWS
    /// reads its own state again for each request.
    fn read_page<T>(
        &self,
        t: &Target,
        api: Api,
        size: usize,
        token: Option<String>,
        answer: impl FnOnce(&World, Instant) -> Vec<T>,
    ) -> Result<Page<T>, CloudError> {
        let from: usize = match token.as_deref().map(str::parse) {
            None => 0,
            Some(Ok(n)) => n,
            Some(Err(_)) => {
                return Err(CloudError::new(
                    api,
                    ErrorKind::Api,
                    "InvalidParameterValue",
                    "Invalid value for NextToken",
                ));
            }
        };
        self.request(t, api, 0, |w, now| {
            let mut items = answer(w, now);
            let end = items.len().min(from.saturating_add(size));
            let next = (end < items.len()).then(|| end.to_string());
            items.truncate(end);
            items.drain(..from.min(end));
            Ok(Page { items, next })
        })
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
